"""Print the first ```python block of a README section: python .ci/readme_code.py README.md Quickstart"""

import re
import sys
from pathlib import Path

readme, section = Path(sys.argv[1]), sys.argv[2]
parts = readme.read_text().split(f"## {section}\n", 1)
if len(parts) != 2:
    sys.exit(f"{readme}: no section '## {section}'")
block = re.search(r"```python\n(.*?)```", parts[1].split("\n## ", 1)[0], re.S)
if block is None:
    sys.exit(f"{readme}: section '## {section}' has no python block")
print(block.group(1), end="")
