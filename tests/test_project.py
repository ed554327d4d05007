"""The project's promises about itself: README commands, CI, changelog."""

import re

from conftest import REPO


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    quickstart = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", quickstart)


def test_readme_has_exactly_two_setup_commands():
    install, tests = _readme_commands()
    assert "pip install torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu &&" in install  # CPU
    assert "pip install torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu &&" in tests  # torch
    assert install.split("&&")[-1].strip() == "medm2g demo"  # the main job, on the embedded default model
    assert tests.rstrip().endswith("pytest")


def test_ci_runs_the_readme_test_command_verbatim():
    _, tests = _readme_commands()
    assert f'bash -c "{tests}"' in (REPO / ".ci" / "run").read_text()
