"""One convention for every command: exit 2 for usage errors, 1 for failures, 130 on Ctrl-C, one-line messages.

The commands are discovered from the parser, so a new command without an entry in
``FAILURES`` fails here until someone decides what a failure of it looks like.
"""

from __future__ import annotations

import argparse

import pytest

import pushpull.cli as cli
from pushpull.cli import build_parser, main


def leaf_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every runnable command of ``parser``, as its words (``("analyze", "weights")``)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += leaf_commands(sub, prefix + (name,)) or [prefix + (name,)]
    return found


COMMANDS = leaf_commands(build_parser())

# A failure of each command: a path that does not exist (or, for `models`, a pattern that matches nothing).
FAILURES = {
    "analyze responses": ["{missing}/m.safetensors", "--image", "{missing}/x.png", "--out", "{tmp}"],
    "analyze spectrum": ["{missing}/m.safetensors", "--out", "{tmp}"],
    "analyze weights": ["{missing}/m.safetensors", "--out", "{tmp}"],
    "demo": ["--data", "{missing}", "--out", "{tmp}", "--no-progress"],
    "eval": ["{missing}/m.safetensors", "--data", "{missing}", "--out", "{tmp}/r.json", "--no-progress"],
    "import-official": ["{missing}/model_best.pth.tar", "--out", "{tmp}/m.safetensors"],
    "make-c": ["--dataset", "cifar10", "--data", "{missing}", "--out", "{tmp}"],
    "make-p": ["--dataset", "cifar10", "--data", "{missing}", "--out", "{tmp}"],
    "merge-results": ["{missing}/r.shard-0-of-2.json", "{missing}/r.shard-1-of-2.json", "--out", "{tmp}/r.json"],
    "models": ["no-such-model*"],
    "report": ["{missing}/r.json", "--out", "{tmp}"],
    "show-corruptions": ["{missing}/x.png", "--out", "{tmp}/s.png"],
    "train": ["--model", "resnet20", "--data", "{missing}", "--out", "{tmp}/run", "--workers", "0",
              "--no-progress"],
    "weights download": ["missing"],  # an unknown name (typed by the user)
    "weights import": ["{missing}/model_best.pth.tar"],
    "weights list": ["missing*"],
    "weights register": ["{missing}/run", "--name", "mine"],
    "weights verify": ["missing"],
}


def run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def test_every_command_has_a_failure_case():
    assert sorted(" ".join(c) for c in COMMANDS) == sorted(FAILURES)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_usage_error_exits_2_with_one_line(command, capsys):
    code, err = run([*command, "--no-such-option"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"pushpull {' '.join(command)}: error: "), err


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_failure_exits_1_with_one_line(command, tmp_path, capsys):
    args = [a.format(missing=tmp_path / "missing", tmp=tmp_path / "out") for a in FAILURES[" ".join(command)]]
    code, err = run([*command, *args], capsys)
    assert code == 1, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"pushpull {' '.join(command)}: error: ") and "rerun with --debug" not in last, err
    if command[0] != "models":
        assert "missing" in last  # names the path


@pytest.mark.parametrize("argv, message", [
    (["make-c", "--severities", "1,x"], "argument --severities: severities must be among 1, 2, 3, 4, 5, such as 1,3,5"),
    (["make-c", "--severities", "0,6"], "got '0,6'"),
    (["eval", "m", "--data", "d", "--batch-size", "0"], "argument --batch-size: expected a positive integer, got '0'"),
    (["eval", "m", "--data", "d", "--limit", "-3"], "argument --limit: expected a positive integer"),
    (["eval", "m", "--data", "d", "--mean", "0.5,0.5"], "argument --mean: expected three comma-separated numbers"),
    (["eval", "m", "--data", "d", "--device", "gpu"],
     "argument --device: expected cpu, cuda, cuda:1, ... or auto, got 'gpu'"),
    (["train", "--model", "resnet20", "--device", "cuda:x"], "argument --device: expected cpu, cuda, cuda:1, ..."),
    (["make-c", "--corruptions", "fog,fogg"], "unknown corruption 'fogg'; did you mean 'fog'?"),
    (["make-p", "--perturbations", "rotaet"], "unknown perturbation 'rotaet'; did you mean 'rotate'?"),
    (["analyze", "responses", "m", "--image", "x", "--noise", "gausian"], "did you mean 'gaussian'"),
    (["train", "--model", "resnet20", "--workers", "many"], "argument --workers: expected a non-negative integer"),
    (["evall", "m"], "pushpull: error: argument COMMAND: unknown command 'evall'; did you mean 'eval'?"),
    (["make-c", "--dataset", "cifar", "--data", "d", "--out", "o"], "unknown value 'cifar'; did you mean 'cifar10'"),
    (["models", "--aa", "4"], "argument --aa: unknown value '4'; choose from 0, 2, 3, 5"),
    (["make-c", "--params", "imagenet6"], "argument --params: unknown parameter table 'imagenet6'; did you mean "),
    (["make-c", "--format", "jpg"], "argument --format: unknown value 'jpg'; did you mean 'jpeg'"),
    (["make-c", "--quality", "0"], "argument --quality: expected a positive integer, got '0'"),
    (["make-p", "--dataset", "folder", "--data", "d", "--out", "o"], "unknown value 'folder'"),
    (["show-corruptions", "x.png", "--out", "s.png", "--params", "tiny"], "unknown parameter table 'tiny'"),
    (["make-c", "--shard", "2/2"], "argument --shard: expected K/N with 0 <= K < N (K counts from 0)"),
    (["make-p", "--shard", "1of2"], "argument --shard: expected K/N with 0 <= K < N"),
    (["make-c", "--dataset", "cifar10", "--data", "d", "--out", "o", "--shard", "0/2", "--merge"],
     "--merge assembles the shards' files: give it without --shard"),
    (["make-p", "--dataset", "imagenet", "--data", "d", "--out", "o", "--merge"],
     "--merge is for the CIFAR layouts; imagenet outputs are one file per image and need none"),
])
def test_bad_values_are_usage_errors(argv, message, capsys):
    code, err = run(argv, capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_old_spellings_still_parse_but_are_not_shown(capsys):
    parser = build_parser()
    args = parser.parse_args(["make-c", "--dataset", "cifar10", "--root", "R", "--out", "O"])
    assert args.data == "R"
    args = parser.parse_args(["eval", "m", "--data", "d", "--quiet"])
    assert args.no_progress
    assert main(["make-c", "--help"]) == 0
    shown = capsys.readouterr().out
    assert "--data DIR" in shown and "--root" not in shown


def test_ctrl_c_exits_130_and_says_how_to_resume(monkeypatch, tmp_path, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("pushpull.cli.make_c.run", interrupted)
    code, err = run(["make-c", "--dataset", "cifar10", "--data", str(tmp_path), "--out", str(tmp_path)], capsys)
    assert code == 130 and err == "pushpull make-c: interrupted; rerun the same command to resume\n"
    monkeypatch.setattr("pushpull.cli.report.handler", interrupted)
    code, err = run(["report", "r.json", "--out", str(tmp_path)], capsys)
    assert code == 130 and err == "pushpull report: interrupted\n"  # nothing to resume


def test_ctrl_c_of_an_eval_that_starts_over_says_how_to_keep_what_it_saved(monkeypatch, tmp_path, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("pushpull.engine.evaluate.evaluate", interrupted)
    argv = ["eval", "resnet20", "--data", str(tmp_path), "--out", str(tmp_path / "r.json")]
    assert run(argv, capsys) == (130, "pushpull eval: interrupted; rerun the same command to resume\n")
    code, err = run([*argv, "--no-resume"], capsys)
    assert code == 130 and "rerun without --no-resume" in err


def test_debug_shows_the_traceback(monkeypatch, tmp_path, capsys):
    argv = ["report", str(tmp_path / "r.json"), "--out", str(tmp_path)]
    code, err = run(["--debug", *argv], capsys)
    assert code == 1 and "Traceback" in err and err.strip().splitlines()[-1].startswith("pushpull report: error:")
    code, err = run([*argv, "--debug"], capsys)  # after the command too
    assert code == 1 and "Traceback" in err
    code, err = run(["analyze", "weights", str(tmp_path / "m.safetensors"), "--debug"], capsys)
    assert code == 1 and "Traceback" in err
    monkeypatch.setenv("PUSHPULL_DEBUG", "1")
    code, err = run(argv, capsys)
    assert code == 1 and "Traceback" in err


def test_unexpected_errors_are_one_line_and_point_to_debug(monkeypatch, tmp_path, capsys):
    def bug(args):
        return {}["oops"]

    monkeypatch.setattr("pushpull.cli.report.handler", bug)
    code, err = run(["report", "r.json", "--out", str(tmp_path)], capsys)
    assert code == 1
    assert err == "pushpull report: error: KeyError: 'oops' (unexpected; rerun with --debug for the traceback)\n"


def test_long_library_messages_stay_on_one_line(monkeypatch, tmp_path, capsys):
    def fails(args):
        raise RuntimeError("Error(s) in loading state_dict:\n\tMissing key(s): " + ", ".join(["w"] * 500))

    monkeypatch.setattr("pushpull.cli.report.handler", fails)
    code, err = run(["report", "r.json", "--out", str(tmp_path)], capsys)
    assert code == 1 and err.count("\n") == 1 and len(err) < cli.MAX_MESSAGE + 100 and "--debug" in err


@pytest.mark.parametrize("text", ["{ not json", "[1, 2]", "{}"])
def test_report_rejects_a_results_file_that_is_not_one(text, tmp_path, capsys):
    bad = tmp_path / "r.json"
    bad.write_text(text)
    code, err = run(["report", str(bad), "--out", str(tmp_path / "rep")], capsys)
    assert code == 1 and str(bad) in err and err.count("\n") == 1 and "unexpected" not in err, err


def test_a_closed_pipe_is_not_reported():
    import subprocess
    import sys

    # `pushpull models | head -0`: the reader has gone before the first line is written.
    reader = subprocess.Popen([sys.executable, "-c", "pass"], stdin=subprocess.PIPE)
    reader.wait(timeout=60)
    writer = subprocess.run([sys.executable, "-m", "pushpull", "models", "--no-flops"], stdout=reader.stdin,
                            stderr=subprocess.PIPE, text=True, timeout=120)
    reader.stdin.close()
    assert writer.returncode == 1 and writer.stderr == ""


def test_eval_and_analyze_reject_weights_that_are_not_weights(tmp_path, capsys):
    import json

    from pushpull import create_model
    from pushpull.data.constants import CIFAR10_MEAN, CIFAR10_STD
    from pushpull.models import save_model

    path = tmp_path / "m.safetensors"
    save_model(create_model("resnet20"), path, name="resnet20", mean=CIFAR10_MEAN, std=CIFAR10_STD, source="test")
    sidecar = json.loads(path.with_suffix(".json").read_text())
    sidecar.pop("sha256")
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    path.write_bytes(b"\x00" * 100)  # not a safetensors file
    for argv in (["eval", str(path), "--data", str(tmp_path), "--out", str(tmp_path / "r.json"), "--no-progress"],
                 ["analyze", "weights", str(path), "--out", str(tmp_path / "a")]):
        code, err = run(argv, capsys)
        assert code == 1 and "m.safetensors" in err and err.count("\n") == 1 and "unexpected" not in err, err


@pytest.mark.parametrize("argv, message", [
    (["train", "--model", "resnet20", "--checkpoint-minutes", "-1"], "argument --checkpoint-minutes: expected a positive number"),
    (["weights", "download", "--timeout", "nan"], "argument --timeout: expected a positive number, got 'nan'"),
])
def test_durations_must_be_positive(argv, message, capsys):
    code, err = run(argv, capsys)
    assert code == 2 and message in err


def test_device_and_arch_are_spelled_alike_everywhere():
    parser = build_parser()
    for command in ("eval", "train", "demo"):
        sub = parser.parse_args([command, *(["m", "--data", "d"] if command == "eval" else []), "--device", "auto"])
        assert sub.device is None  # 'auto' and no --device mean the same: CUDA when available
    args = parser.parse_args(["import-official", "ckpt", "--model", "resnet20", "--out", "m.safetensors"])
    assert args.arch == "resnet20"  # --model: the old spelling of --arch, still accepted


@pytest.mark.parametrize("extra, message", [
    (["--dataset", "folder", "--format", "png", "--quality", "80"], "a quality (80) is for JPEG output"),
    (["--dataset", "folder", "--quality", "101", "--format", "jpeg"], "JPEG quality must be in 1..100, got 101"),
    (["--dataset", "cifar10", "--params", "cifar"], "--params: only with --dataset folder"),
    (["--dataset", "folder"], "image folder missing: "),
])
def test_make_c_folder_options_fail_in_one_line(extra, message, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    data = tmp_path / ("missing" if extra == ["--dataset", "folder"] else "in")
    code, err = run(["make-c", *extra, "--data", str(data), "--out", str(tmp_path / "out")], capsys)
    assert code == 1 and message in err and err.count("\n") == 1, err


def test_a_torchvision_model_is_pointed_to_weights_files_not_to_pretrained(tmp_path, capsys):
    base = ["eval", "torchvision:resnet18", "--data", str(tmp_path), "--out", str(tmp_path / "r.json"), "--no-progress"]
    code, err = run([*base, "--pretrained"], capsys)
    assert code == 1 and err.count("\n") == 1 and "unknown model" not in err, err
    assert "for torchvision:resnet18 give a weights file (--weights FILE)" in err
    code, err = run(base, capsys)
    assert code == 1 and "'torchvision:resnet18' needs --weights FILE" in err and "--pretrained" not in err, err



@pytest.mark.parametrize("argv", [
    ["make-c", "--dataset", "cifar10", "--data", "{data}", "--out", "{file}", "--corruptions", "fog", "--no-progress"],
    ["train", "--model", "resnet20", "--data", "{data}", "--out", "{file}", "--max-steps", "1", "--workers", "0",
     "--no-progress"],
])
def test_an_out_folder_that_is_a_file_is_named(argv, tmp_path, capsys, fake_cifar10):
    file = tmp_path / "notes.txt"
    file.write_text("x")
    root = fake_cifar10(tmp_path / "data", n_test=4, n_train=8).root
    code, err = run([a.format(data=root, file=file) for a in argv], capsys)
    assert code == 1 and err.endswith(f": error: {file} is a file; a folder is needed there\n"), err


def test_a_library_warning_is_one_line_naming_the_command(monkeypatch, tmp_path, capsys):
    import warnings

    def warns(args):
        warnings.warn("Figure 3 skipped:\n  it needs all 15 corruptions", stacklevel=2)
        return 0

    monkeypatch.setattr("pushpull.cli.report.handler", warns)
    assert run(["report", "r.json", "--out", str(tmp_path)], capsys) == (
        0, "pushpull report: warning: Figure 3 skipped: it needs all 15 corruptions\n")



@pytest.mark.parametrize("extra, message", [
    (["--benchmark", "cifar10-c", "--p-dir", "P"], "--p-dir needs a -P benchmark; --benchmark cifar10-c has none"),
    (["--benchmark", "cifar10-c", "--p-dir", "P", "--perturbations", "rotate"],
     "--p-dir and --perturbations need a -P"),
    (["--benchmark", "imagenet-p", "--c-dir", "C"], "--c-dir needs a -C benchmark; --benchmark imagenet-p has none"),
    (["--benchmark", "cifar10-p", "--corruptions", "fog"], "--corruptions needs a -C benchmark"),
])
def test_eval_refuses_options_its_benchmarks_would_ignore(extra, message, tmp_path, capsys):
    code, err = run(["eval", "resnet20", "--data", str(tmp_path), "--out", str(tmp_path / "r.json"), *extra], capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err
