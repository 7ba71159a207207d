"""Check the built sdist and wheel: both carry the LICENSE file. Usage: python .ci/check_dist.py dist"""

import sys
import tarfile
import zipfile
from pathlib import Path

dist = Path(sys.argv[1])
wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
if len(wheels) != 1 or len(sdists) != 1:
    sys.exit(f"{dist}: expected one wheel and one sdist, found {[p.name for p in dist.iterdir()]}")
license_text = (Path(__file__).resolve().parents[1] / "LICENSE").read_text()
if "Apache License" not in license_text or "Version 2.0" not in license_text:
    sys.exit("LICENSE is not the Apache-2.0 text")
with zipfile.ZipFile(wheels[0]) as z:
    in_wheel = [n for n in z.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
    if not in_wheel or z.read(in_wheel[0]).decode() != license_text:
        sys.exit(f"{wheels[0].name}: no LICENSE in its dist-info")
    metadata = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    if "License-Expression: Apache-2.0" not in metadata:
        sys.exit(f"{wheels[0].name}: METADATA does not declare Apache-2.0")
with tarfile.open(sdists[0]) as t:
    root = sdists[0].name.removesuffix(".tar.gz")
    member = t.extractfile(f"{root}/LICENSE") if f"{root}/LICENSE" in t.getnames() else None
    if member is None or member.read().decode() != license_text:
        sys.exit(f"{sdists[0].name}: no LICENSE at its root")
print(f"LICENSE (Apache-2.0) in {wheels[0].name} and {sdists[0].name}")
