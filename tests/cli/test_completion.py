"""`foveal --print-completion bash|zsh`: a script naming the verbs and each verb's flags."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from foveal.cli.main import build_parser


def _script(shell: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "foveal.cli.main", "--print-completion", shell],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_script_names_verbs_and_flags(shell):
    text = _script(shell)
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for verb in ("train", "eval", "predict", "models", "runs", "export", "serve"):
        assert verb in sub.choices and f"        {verb}) words=" in text
    train_line = next(line for line in text.splitlines() if line.strip().startswith("train)"))
    for flag in ("--epochs", "--lr", "--optim.weight_decay", "--train.logger", "--resume", "--help"):
        assert f" {flag} " in train_line or f'"{flag} ' in train_line or f' {flag}"' in train_line, flag
    assert "--compare" in next(line for line in text.splitlines() if line.strip().startswith("runs)"))
    assert "complete -o filenames -o bashdefault -F _foveal_complete foveal" in text
    assert ("bashcompinit" in text) == (shell == "zsh")


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completes_a_verb_and_a_flag():
    """Load the script into bash and ask it, as <TAB> would."""
    def complete(*words: str) -> list[str]:
        line = " ".join(["foveal", *words])
        probe = (f'{_script("bash")}\nCOMP_WORDS=(foveal {" ".join(words)}); COMP_CWORD={len(words)}; '
                 f'COMP_LINE="{line}"; _foveal_complete; printf "%s\\n" "${{COMPREPLY[@]}}"')
        return subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True).stdout.split()

    assert "train" in complete("tr")
    assert complete("train", "--train.logg") == ["--train.logger"]
    assert "--compare" in complete("runs", "--c")


def test_unknown_shell_is_refused():
    proc = subprocess.run([sys.executable, "-m", "foveal.cli.main", "--print-completion", "fish"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "invalid choice: 'fish'" in proc.stderr
