"""The README's quickstart runs as written and does what it says."""

import re
import shlex
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quickstart_runs():
    text = README.read_text()
    section = text.split("## Quickstart", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 14
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(code, "README quickstart", "exec"), namespace)
    chunk, demos = namespace["chunk"].detach(), namespace["demos"]
    assert chunk.shape == (8, 16, 7)
    assert float(namespace["loss"].detach()) < 0.8  # from ~1.3-2 at initialisation
    # Sampling carries noise (RMS distance ~1.15 from the nearest demo) onto the demonstrations.
    rms_to_nearest_demo = torch.cdist(chunk.flatten(1), demos.flatten(1)).min(1).values / (16 * 7) ** 0.5
    assert float(rms_to_nearest_demo.median()) < 0.6


def test_setup_commands_match_ci():
    text = README.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text.split("## Set up", 1)[1].split("##", 1)[0], re.S)
    install, test = (b.strip() for b in blocks[:2])
    ci = (README.parent / ".ci" / "run").read_text()
    assert install in ci and test in ci


def test_policy_example_runs_and_round_trips(tmp_path, monkeypatch):
    text = README.read_text()
    code = re.search(r"```python\n(.*?)```", text.split("## A policy, end to end", 1)[1], re.S).group(1)
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(code, "README policy example", "exec"), namespace)
    actions, info = namespace["actions"], namespace["debug_info"]
    assert actions.shape == (2, 8, 7) and info["nfe"] == 10
    from flowvla.policy import VLAPolicy

    again, _ = VLAPolicy.from_pretrained(tmp_path / "my_policy").predict_action(
        namespace["batch"], solver="midpoint", steps=5, seed=0
    )
    assert torch.equal(actions, again)

    # The diagnose line that follows the snippet works as written on what the snippet saved.
    from flowvla.diagnostics import main as diagnose

    line = re.search(r"`(flowvla-diagnose [^`]+)`", text.replace("\n", " ")).group(1)
    assert diagnose(shlex.split(line)[1:]) == 0


def test_docs_home_page_carries_setup_quickstart_and_libero():
    # The docs site's home page is the README (included when the site is built), not a link to it.
    home = (README.parent / "docs" / "index.md").read_text()
    included = '--8<-- "README.md"' in home
    text = README.read_text() if included else home
    assert all(f"## {section}" in text for section in ("Set up", "Quickstart", "LIBERO"))
