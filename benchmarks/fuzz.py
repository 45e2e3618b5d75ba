"""Try ``mer`` as a hostile or unlucky user would, and print how many cases it handles.

    python benchmarks/fuzz.py [--only TEXT] [--json] [--keep]

Each case makes bad input in a fresh temporary folder (damaged media, cache entries, checkpoints,
datasets and CSVs; unwritable outputs; kills), runs mer on it (the CLI in a subprocess, with the
feature cache in that folder, or one library call) and checks what a user would: *handled* means
a one-line message naming the file and the problem (exit 1 or 2, no traceback) or a correct
result, with nothing lost and nothing left behind; anything else is *failed*, with what was seen.
The last lines are a table of handled / failed per group and in all.

The cases need ffmpeg (imageio-ffmpeg's), Whisper ``tiny.en`` and the packaged ``default``
checkpoint, all offline. Run it under ``nice``: it takes a few minutes on two cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEAD_PID = 2**22 + 12345  # above Linux's pid_max: never a live process


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.stderr

    def clean_error(self, *words: str) -> tuple[bool, str]:
        """Exit 1/2 with an ``Error:`` line holding ``words``, and no traceback."""
        error = next((line for line in self.stderr.splitlines() if "Error" in line), "")
        ok = self.rc in (1, 2) and not self.traceback and all(w in self.stderr for w in words)
        return ok, f"rc={self.rc} {error or self.last_line()}"

    def last_line(self) -> str:
        lines = [line for line in self.stderr.strip().splitlines() if line.strip()]
        return lines[-1][:160] if lines else ""


@dataclass
class Case:
    group: str
    name: str
    run: Callable[[Path], tuple[bool, str]]


CASES: list[Case] = []


def case(group: str, name: str) -> Callable:
    def register(func: Callable[[Path], tuple[bool, str]]) -> Callable:
        CASES.append(Case(group, name, func))
        return func

    return register


def mer(tmp: Path, *args: object, timeout: float = 600, env: dict | None = None) -> Run:
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "XDG_CACHE_HOME": str(tmp / "cache"),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        **(env or {}),
    }
    result = subprocess.run(
        [sys.executable, "-m", "mercli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=tmp,
        env=environment,
        timeout=timeout,
    )
    return Run(result.returncode, result.stdout, result.stderr)


# ---------------------------------------------------------------------------------------------
# inputs


def ffmpeg(*args: object) -> None:
    from imageio_ffmpeg import get_ffmpeg_exe

    subprocess.run([get_ffmpeg_exe(), "-v", "error", "-y", *map(str, args)], check=True)


def media(path: Path, seconds: float = 3.0, video: bool = True) -> Path:
    inputs = ["-f", "lavfi", "-i", f"sine=frequency=220:sample_rate=16000:duration={seconds}"]
    if video:
        inputs = ["-f", "lavfi", "-i", f"testsrc=size=96x64:rate=10:duration={seconds}", *inputs]
    codecs = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"] if video else []
    ffmpeg(*inputs, *codecs, "-c:a", "aac", "-movflags", "+faststart", path)
    return path


def default_checkpoint(tmp: Path, change: Callable[[dict], None] | None = None) -> Path:
    """A copy of the packaged default checkpoint, its checkpoint.json changed by ``change``."""
    import shutil

    copy = tmp / "ckpt"
    shutil.copytree(ROOT / "mercli" / "weights" / "default", copy)
    if change is not None:
        meta = json.loads((copy / "checkpoint.json").read_text())
        change(meta)
        (copy / "checkpoint.json").write_text(json.dumps(meta))
    return copy


def mmsa_pickle(tmp: Path, change: Callable[[dict], None] | None = None) -> Path:
    from mercli.data.synthetic import SMALL_LAYOUT, write_mmsa_pickle

    path = write_mmsa_pickle(tmp / "data.pkl", n_train=8, n_valid=4, n_test=4, layout=SMALL_LAYOUT)
    if change is not None:
        with open(path, "rb") as f:
            data = pickle.load(f)
        change(data)
        with open(path, "wb") as f:
            pickle.dump(data, f)
    return path


def label_csv(tmp: Path, rows: str, encoding: str = "utf-8", bom: bool = False) -> Path:
    path = tmp / "label.csv"
    text = "id,text,label,mode\n" + rows
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode(encoding))
    return path


def train(tmp: Path, data: Path, *args: object) -> Run:
    return mer(
        tmp,
        *("train", "--dataset", "mosi", "--data", data, "--seed", "1", "--device", "cpu"),
        *("--out", tmp / "run", "--epochs", "1"),
        *args,
    )


def cache_entries(tmp: Path) -> list[Path]:
    return sorted((tmp / "cache").rglob("*.npz"))


# ---------------------------------------------------------------------------------------------
# data loss and stuck states


def _damaged_cache(tmp: Path, damage: Callable[[bytes], bytes]) -> tuple[bool, str]:
    clip = media(tmp / "clip.mp4")
    first = mer(tmp, "extract", clip, "-o", tmp / "a.npz", "--no-faces")
    entries = cache_entries(tmp)
    if first.rc != 0 or len(entries) != 1:
        return False, f"first run rc={first.rc} entries={len(entries)} {first.last_line()}"
    entries[0].write_bytes(damage(entries[0].read_bytes()))
    again = mer(tmp, "extract", clip, "-o", tmp / "b.npz", "--no-faces")
    ok = again.rc == 0 and not again.traceback and len(cache_entries(tmp)) == 1
    ok = ok and "damaged" in again.stderr
    return ok, f"rc={again.rc} {again.last_line()}"


@case("data loss", "cache entry truncated")
def _(tmp: Path) -> tuple[bool, str]:
    return _damaged_cache(tmp, lambda b: b[: len(b) // 2])


@case("data loss", "cache entry bit-flipped")
def _(tmp: Path) -> tuple[bool, str]:
    return _damaged_cache(tmp, lambda b: b[:200] + bytes([b[200] ^ 0xFF]) + b[201:])


@case("data loss", "cache entry empty")
def _(tmp: Path) -> tuple[bool, str]:
    return _damaged_cache(tmp, lambda b: b"")


@case("data loss", "text-state cache entry truncated")
def _(tmp: Path) -> tuple[bool, str]:
    os.environ["XDG_CACHE_HOME"] = str(tmp / "cache")
    try:
        from unittest import mock

        import numpy as np

        from mercli.data import text_states

        def encode(texts, *args, **kwargs):
            return [np.ones((3, 4), np.float32) for _ in texts]

        with (
            mock.patch.object(text_states, "encode_texts", encode),
            mock.patch("mercli.model.text_backbone.load_backbone", lambda name: None),
            mock.patch("mercli.model.text_backbone.load_tokenizer", lambda name: None),
        ):
            text_states.cached_states(["a", "b"], "x")
            (entry,) = (tmp / "cache").rglob("*.npz")
            entry.write_bytes(entry.read_bytes()[:50])
            states = text_states.cached_states(["a", "b"], "x")
        return len(states) == 2, "recomputed"
    except Exception as error:
        return False, f"{type(error).__name__}: {str(error)[:120]}"
    finally:
        os.environ.pop("XDG_CACHE_HOME", None)


@case("data loss", "feature cache folder cannot be created")
def _(tmp: Path) -> tuple[bool, str]:
    blocker = tmp / "cache" / "mer" / "features"  # a file where the folder should be
    blocker.parent.mkdir(parents=True)
    blocker.write_text("x")
    clip = media(tmp / "clip.mp4")
    run = mer(tmp, "extract", clip, "-o", tmp / "a.npz", "--no-faces")
    ok = (
        run.rc == 0 and (tmp / "a.npz").is_file() and "cannot write the feature cache" in run.stderr
    )
    return ok, f"rc={run.rc} {run.last_line()}"


def _unwritable(tmp: Path, command: str, option: str, target: Path, what: str) -> tuple[bool, str]:
    clip = media(tmp / "clip.mp4")
    args = [command, clip, option, target]
    started = time.perf_counter()
    run = mer(tmp, *args, "--no-faces")
    ok, detail = run.clean_error(str(target))
    ok = ok and not cache_entries(tmp)  # refused before any media work
    return ok, f"{detail} ({time.perf_counter() - started:.0f} s)"


@case("data loss", "analyze --out under a file")
def _(tmp: Path) -> tuple[bool, str]:
    (tmp / "file").write_text("x")
    return _unwritable(tmp, "analyze", "--out", tmp / "file" / "r.json", "JSON")


@case("data loss", "analyze --out in /proc")
def _(tmp: Path) -> tuple[bool, str]:
    return _unwritable(tmp, "analyze", "--out", Path("/proc/mer-fuzz/r.json"), "JSON")


@case("data loss", "analyze --plot under a file")
def _(tmp: Path) -> tuple[bool, str]:
    (tmp / "file").write_text("x")
    return _unwritable(tmp, "analyze", "--plot", tmp / "file" / "t.png", "timeline")


@case("data loss", "extract -o under a file")
def _(tmp: Path) -> tuple[bool, str]:
    (tmp / "file").write_text("x")
    return _unwritable(tmp, "extract", "-o", tmp / "file" / "f.npz", "feature file")


@case("data loss", "analyze --out into a missing folder")
def _(tmp: Path) -> tuple[bool, str]:
    clip = media(tmp / "clip.mp4")
    run = mer(tmp, "analyze", clip, "--out", tmp / "new" / "r.json", "--no-faces")
    ok = run.rc == 0 and json.loads((tmp / "new" / "r.json").read_text())["files"]
    return bool(ok), f"rc={run.rc} {run.last_line()}"


@case("data loss", "prepare -o under a file")
def _(tmp: Path) -> tuple[bool, str]:
    (tmp / "file").write_text("x")
    (tmp / "raw").mkdir()
    labels = label_csv(tmp / "raw", "v_1,hi,1.0,train\n")
    run = mer(tmp, "prepare", tmp / "raw", "--labels", labels, "-o", tmp / "file" / "d.pkl")
    return run.clean_error("d.pkl")


@case("data loss", "checkpoint set killed between renames")
def _(tmp: Path) -> tuple[bool, str]:
    try:
        from unittest import mock

        from mercli.atomic import commit_folder, recover_folder, staging_folder

        target = tmp / "last"
        for epoch, kill in ((1, False), (2, True)):
            staged = staging_folder(target)
            (staged / "weights").write_text(f"w{epoch}")
            (staged / "trainer_state").write_text(f"o{epoch}")
            if not kill:
                commit_folder(staged, target)
                continue
            real, calls = os.replace, []

            def replace(src, dst, real=real, calls=calls):
                calls.append(dst)
                if len(calls) == 2:
                    raise KeyboardInterrupt
                real(src, dst)

            with (
                mock.patch("mercli.atomic.os.replace", replace),
                contextlib.suppress(KeyboardInterrupt),
            ):
                commit_folder(staged, target)
        recover_folder(target)
        pair = ((target / "weights").read_text(), (target / "trainer_state").read_text())
        return pair in (("w1", "o1"), ("w2", "o2")), f"resumes {pair}"
    except Exception as error:
        return False, f"{type(error).__name__}: {str(error)[:120]}"


@case("data loss", "temporary file of a killed write")
def _(tmp: Path) -> tuple[bool, str]:
    from mercli.atomic import write_atomically

    stray = tmp / f".out.json.{DEAD_PID}.x.tmp"
    stray.write_bytes(b"x" * 1000)
    old_style = tmp / "tmpabcd.tmp"  # what earlier versions left
    write_atomically(tmp / "out.json", lambda f: f.write(b"{}"))
    left = [p.name for p in tmp.iterdir() if p.name.endswith(".tmp") and p != old_style]
    return not left, f"left: {left}"


@case("data loss", "prepare --workers 2 killed")
def _(tmp: Path) -> tuple[bool, str]:
    script = tmp / "pool.py"
    script.write_text(
        "import os, signal, sys, time\n"
        "try:\n"
        "    import mercli.engine as p\n"
        "except ImportError:\n"
        "    import mercli.prepare as p\n"
        "if __name__ == '__main__':\n"
        "    pool = (p.worker_pool(2, os.getpid, ()) if hasattr(p, 'worker_pool') else\n"
        "            __import__('concurrent.futures').futures.ProcessPoolExecutor(2,\n"
        "            mp_context=__import__('multiprocessing').get_context('spawn')))\n"
        "    futures = [pool.submit(time.sleep, 300) for _ in range(2)]\n"
        "    while len(pool._processes) < 2: time.sleep(0.1)\n"
        "    open(sys.argv[1], 'w').write(' '.join(map(str, pool._processes)))\n"
        "    time.sleep(8)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    pids_file = tmp / "pids"
    subprocess.run(
        [sys.executable, str(script), str(pids_file)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        timeout=120,
    )  # fmt: skip
    pids = [int(p) for p in pids_file.read_text().split()]
    deadline = time.monotonic() + 20
    while any(_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.5)
    alive = [p for p in pids if _running(p)]
    for p in alive:
        os.kill(p, signal.SIGKILL)
    return not alive, f"{len(alive)} of {len(pids)} workers alive 20 s after the kill"


def _running(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# wrong results without a word


@case("wrong results", "truncated mp4 (index at the front)")
def _(tmp: Path) -> tuple[bool, str]:
    whole = media(tmp / "whole.mp4", seconds=20, video=False)
    cut = tmp / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    run = mer(tmp, "extract", cut, "-o", tmp / "f.npz", "--no-faces")
    said = "stopped" in run.stdout + run.stderr or "truncated" in run.stdout + run.stderr
    return run.rc in (0, 1) and said and not run.traceback, f"rc={run.rc} {run.last_line()}"


@case("wrong results", "labels x100 in a pickle")
def _(tmp: Path) -> tuple[bool, str]:
    def times_100(d: dict) -> None:
        d["train"]["regression_labels"] = d["train"]["regression_labels"] * 100 + 0.5

    return train(tmp, mmsa_pickle(tmp, times_100)).clean_error("regression_labels")


@case("wrong results", "label 42 in a CSV")
def _(tmp: Path) -> tuple[bool, str]:
    rows = "a_1,good,1.0,train\na_2,bad,42,train\na_3,x,0,valid\na_4,y,0,test\n"
    return train(tmp, label_csv(tmp, rows)).clean_error("line 3", "label")


@case("wrong results", "empty train split")
def _(tmp: Path) -> tuple[bool, str]:
    return train(tmp, label_csv(tmp, "a_3,x,0,valid\na_4,y,0,test\n")).clean_error("train")


@case("wrong results", "inf label")
def _(tmp: Path) -> tuple[bool, str]:
    def inf(d: dict) -> None:
        d["test"]["regression_labels"][0] = float("inf")

    return train(tmp, mmsa_pickle(tmp, inf)).clean_error("regression_labels")


@case("wrong results", "compare with a NaN metric")
def _(tmp: Path) -> tuple[bool, str]:
    seeds = {str(s): {"test": {"mae": 0.5 + s / 10, "corr": float("nan")}} for s in (1, 2, 3)}
    (tmp / "a.json").write_text(json.dumps({"seeds": seeds}))
    (tmp / "b.json").write_text(json.dumps({"seeds": seeds}))
    run = mer(tmp, "compare", tmp / "a.json", tmp / "b.json", "--json")

    def refuse(token: str) -> None:
        raise ValueError(token)

    try:
        json.loads(run.stdout, parse_constant=refuse)
    except ValueError as error:
        return False, f"rc={run.rc} stdout is not valid JSON ({error}) {run.last_line()}"
    return run.rc == 0, f"rc={run.rc}"


@case("wrong results", "image input: face_coverage")
def _(tmp: Path) -> tuple[bool, str]:
    image = tmp / "photo.png"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=96x64:rate=1", "-frames:v", "1", image)
    run = mer(tmp, "extract", image, "-o", tmp / "f.npz")
    if run.rc != 0:
        return False, f"rc={run.rc} {run.last_line()}"
    try:
        from mercli.features.cache import read_features
    except ImportError:  # mer before the feature cache moved beside the features
        from mercli.cache import read_features  # type: ignore[no-redef]

    coverage = read_features(tmp / "f.npz").descriptors.face_coverage
    return coverage is None, f"face_coverage={coverage}"


# ---------------------------------------------------------------------------------------------
# security


def _prepare_ids(tmp: Path, ids: list[str]) -> tuple[bool, str]:
    raw = tmp / "data" / "raw"
    (raw / "Raw").mkdir(parents=True)
    secret = tmp / "secret"
    secret.mkdir()
    media(secret / "x.mp4")
    rows = "".join(f"{i},hello,1.0,train\n" for i in ids)
    labels = label_csv(raw, rows)
    run = mer(tmp, "prepare", raw, "--labels", labels, "-o", tmp / "d.pkl", "--no-faces")
    report = tmp / "d.report.json"
    reasons = (
        [f["reason"] for f in json.loads(report.read_text())["failed"]] if report.is_file() else []
    )
    ok = not (tmp / "d.pkl").exists() and len(reasons) == len(ids)
    ok = ok and all("outside" in r for r in reasons) and not run.traceback
    return ok, f"rc={run.rc} reasons={[r[:60] for r in reasons]}"


@case("security", "prepare id ../../secret")
def _(tmp: Path) -> tuple[bool, str]:
    return _prepare_ids(tmp, ["../../../secret_x"])


@case("security", "prepare id as an absolute path")
def _(tmp: Path) -> tuple[bool, str]:
    return _prepare_ids(tmp, [f"{tmp}/secret$_$x"])


def _checkpoint_case(
    tmp: Path, change: Callable[[dict], None], *words: str, early: bool = True
) -> tuple[bool, str]:
    ckpt = default_checkpoint(tmp, change)
    clip = media(tmp / "clip.mp4")
    started = time.perf_counter()
    run = mer(tmp, "analyze", clip, "--checkpoint", ckpt, "--no-faces", timeout=300)
    ok, detail = run.clean_error("checkpoint.json", *words)
    ok = ok and (not early or not cache_entries(tmp))  # early: refused before any media work
    return ok, f"{detail} ({time.perf_counter() - started:.0f} s)"


@case("security", "checkpoint d_mic 1e7")
def _(tmp: Path) -> tuple[bool, str]:
    return _checkpoint_case(tmp, lambda m: m["model_config"].update(d_mic=1e7), "d_mic")


@case("security", "checkpoint d_mic 60000 (in bounds, too big for its weights)")
def _(tmp: Path) -> tuple[bool, str]:
    # found when the weights are opened, while the first file's front end may already run
    return _checkpoint_case(tmp, lambda m: m["model_config"].update(d_mic=60000), early=False)


# ---------------------------------------------------------------------------------------------
# tracebacks instead of messages


@case("messages", "checkpoint text: 'foo'")
def _(tmp: Path) -> tuple[bool, str]:
    return _checkpoint_case(tmp, lambda m: m["model_config"].update(text="foo"), "text")


@case("messages", "checkpoint d_model: 'abc'")
def _(tmp: Path) -> tuple[bool, str]:
    return _checkpoint_case(tmp, lambda m: m["model_config"].update(d_model="abc"), "d_model")


@case("messages", "checkpoint feature_profile: null")
def _(tmp: Path) -> tuple[bool, str]:
    ckpt = default_checkpoint(tmp, lambda m: m.update(feature_profile=None))
    run = mer(tmp, "analyze", media(tmp / "clip.mp4"), "--checkpoint", ckpt, "--no-faces")
    return run.clean_error("profile")


@case("messages", "checkpoint model_config: a list")
def _(tmp: Path) -> tuple[bool, str]:
    return _checkpoint_case(tmp, lambda m: m.update(model_config=[1, 2]))


@case("messages", "empty valid split")
def _(tmp: Path) -> tuple[bool, str]:
    rows = "a_1,good,1.0,train\na_4,y,0,test\n"
    return train(tmp, label_csv(tmp, rows)).clean_error("valid")


@case("messages", "empty test split")
def _(tmp: Path) -> tuple[bool, str]:
    rows = "a_1,good,1.0,train\na_4,y,0,valid\n"
    return train(tmp, label_csv(tmp, rows)).clean_error("test")


@case("messages", "audio width differs between splits")
def _(tmp: Path) -> tuple[bool, str]:
    def narrower(d: dict) -> None:
        d["valid"]["audio"] = d["valid"]["audio"][:, :, :-1]

    return train(tmp, mmsa_pickle(tmp, narrower)).clean_error("audio")


@case("messages", "train --epochs 0")
def _(tmp: Path) -> tuple[bool, str]:
    return train(tmp, mmsa_pickle(tmp), "--epochs", "0").clean_error("epochs")


@case("messages", "train --batch-size 0")
def _(tmp: Path) -> tuple[bool, str]:
    return train(tmp, mmsa_pickle(tmp), "--batch-size", "0").clean_error("batch-size")


def _resume_with(tmp: Path, payload: bytes) -> tuple[bool, str]:
    data = mmsa_pickle(tmp)
    first = train(tmp, data)
    states = sorted((tmp / "run").rglob("trainer_state.pt"))
    if first.rc != 0 or not states:
        return False, f"first run rc={first.rc} {first.last_line()}"
    results = tmp / "run" / "results.json"
    results.unlink(missing_ok=True)  # the seed is not done: resume goes back to last/
    states[0].write_bytes(payload(states[0].read_bytes()) if callable(payload) else payload)
    run = train(tmp, data, "--resume", "--epochs", "2")
    return run.clean_error("trainer_state.pt")


@case("messages", "train --resume, trainer_state.pt truncated")
def _(tmp: Path) -> tuple[bool, str]:
    return _resume_with(tmp, lambda b: b[: len(b) // 3])  # type: ignore[arg-type]


@case("messages", "train --resume, trainer_state.pt malicious")
def _(tmp: Path) -> tuple[bool, str]:
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp}/pwned",))

    ok, detail = _resume_with(tmp, pickle.dumps(Evil()))
    return ok and not (tmp / "pwned").exists(), detail


@case("messages", "CSV not UTF-8")
def _(tmp: Path) -> tuple[bool, str]:
    rows = "a_1,caf\u00e9,1.0,train\na_2,x,0,valid\na_3,y,0,test\n"
    return train(tmp, label_csv(tmp, rows, encoding="latin-1")).clean_error("label.csv", "UTF-8")


@case("messages", "CSV with a byte-order mark")
def _(tmp: Path) -> tuple[bool, str]:
    rows = "a_1,good,1.0,train\na_2,x,0,valid\na_3,y,0,test\n"
    path = label_csv(tmp, rows, bom=True)
    run = mer(tmp, "evaluate", default_checkpoint(tmp), "--dataset", "mosi", "--data", path,
              "--device", "cpu", "--json")  # fmt: skip
    return run.rc == 0 and not run.traceback, f"rc={run.rc} {run.last_line()}"


@case("messages", "compare on a top-level list")
def _(tmp: Path) -> tuple[bool, str]:
    (tmp / "a.json").write_text("[1, 2]")
    return mer(tmp, "compare", tmp / "a.json", tmp / "a.json").clean_error("a.json")


@case("messages", "compare on a file that is not JSON")
def _(tmp: Path) -> tuple[bool, str]:
    (tmp / "a.json").write_bytes(b"\xff\xfe not json")
    return mer(tmp, "compare", tmp / "a.json", tmp / "a.json").clean_error("a.json")


@case("messages", "evaluate a packaged name")
def _(tmp: Path) -> tuple[bool, str]:
    rows = "a_1,good,1.0,train\na_2,x,0,valid\na_3,y,0,test\n"
    run = mer(tmp, "evaluate", "default", "--dataset", "mosi", "--data", label_csv(tmp, rows),
              "--device", "cpu", "--json")  # fmt: skip
    return run.rc == 0, f"rc={run.rc} {run.last_line()}"


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="Run the cases whose name holds this text.")
    parser.add_argument("--json", action="store_true", help="Print the rows as JSON lines too.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary folders.")
    args = parser.parse_args()
    rows = []
    for c in CASES:
        if args.only and args.only not in c.name:
            continue
        tmp = Path(tempfile.mkdtemp(prefix="mer-fuzz-"))
        started = time.perf_counter()
        try:
            ok, detail = c.run(tmp)
        except Exception as error:
            ok, detail = False, f"case raised {type(error).__name__}: {str(error)[:150]}"
        seconds = time.perf_counter() - started
        rows.append({"group": c.group, "case": c.name, "handled": ok, "detail": detail})
        mark = "handled" if ok else "FAILED "
        print(f"{mark} {c.group:14s} {c.name:58s} {seconds:5.1f}s  {detail[:150]}", flush=True)
        if args.json:
            print(json.dumps(rows[-1]))
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"{'group':16s} {'handled':>8s} {'failed':>7s}")
    for group in dict.fromkeys(r["group"] for r in rows):
        mine = [r for r in rows if r["group"] == group]
        n_ok = sum(r["handled"] for r in mine)
        print(f"{group:16s} {n_ok:8d} {len(mine) - n_ok:7d}")
    n_ok = sum(r["handled"] for r in rows)
    print(f"{'all':16s} {n_ok:8d} {len(rows) - n_ok:7d}")


if __name__ == "__main__":
    main()
