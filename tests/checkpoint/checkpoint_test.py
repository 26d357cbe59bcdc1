#!/usr/bin/env python3
"""`primal train` stopped, killed, damaged and resumed, as a scheduler and a user meet it.

  checkpoint_test.py --primal BIN --mpirun MPIRUN --workdir DIR CHECK

CHECK is one of:
  ExactResumeOneProcess        40 steps straight against 20 + stop (exit 75) + resume + 20: the
                               per-step losses and the final parameters are bitwise identical
                               (a torn last line of metrics.jsonl is dropped by the resume);
                               the stopped half saves in the background (async_save), and its
                               checkpoint files equal the straight run's byte for byte
  ExactResumeTp2Dp2            the same as a TP=2 x DP=2 job; then a flipped byte in a shard
                               that only TP rank 1 reads makes every rank fall back together
  SignalOnOneRankStopsAllAtOneStep
                               SIGTERM to one rank of a TP=2 job: every rank stops after the
                               same step, saves it, exits 75; SIGUSR1 to mpirun (forwarded to
                               every rank) likewise; resuming ends bitwise where the straight
                               run ends
  KilledRankResumesBitwise     a rank SIGKILLed mid-run; the job restarted with --resume auto
                               ends with the uninterrupted run's parameters, bitwise
  ReshardTp2Dp2ToOtherLayouts  saved under (2,2), loaded under (1,1), (1,4), (4,1): parameters
                               bitwise equal after loading, continued losses within 1e-5
  DamagedCheckpointsNameTheFileAndAutoFallsBack
                               truncated shard, flipped byte, missing manifest, wrong format
                               version, another model's checkpoint: one error line naming the
                               file (train --resume DIR, eval, export; exit 2); --resume auto
                               warns, falls back and ends bitwise like the straight run; no file
                               is deleted or changed
  SaveKilledAtEveryPhaseLeavesThePreviousLoadable
                               the writer SIGKILLed at each phase of a save (test hook
                               PRIMAL_CHECKPOINT_FAULT): --resume auto continues from the last
                               complete checkpoint and ends bitwise like the straight run
Exit 0 on success, 1 on failure. Prints what it measured.
"""
import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from safetensors_file import read_tensor_bytes  # noqa: E402

REQUEUE = 75
BAD_INPUT = 2


def write_corpus(path):
    with open(path, "w") as f:
        for i in range(400):
            f.write("And God said, Let there be light: and there was light. %d\n" % (i % 53))


def lm_config(workdir, steps=40, width=32, name="lm.pbtxt"):
    corpus = os.path.join(workdir, "corpus.txt")
    write_corpus(corpus)
    path = os.path.join(workdir, name)
    with open(path, "w") as f:
        f.write('model { width: %d heads: 4 mlp_width: 64 max_len: 24 layers: [SOFTMAX, PRIMAL] '
                'low_rank: 4 rank_multi: 2 eta: 0.5 dropout: 0.1 }\n'
                'data { path: "%s" seq_len: 24 batch_size: 8 }\n'
                'optimizer { lr: 3e-3 }\nschedule { warmup_steps: 4 }\n'
                'train { steps: %d eval_every: 0 eval_batches: 2 log_every: 1 threads: 1 }\n'
                'checkpoint { keep: 0 }\n' % (width, corpus, steps))
    return path


class Failed(Exception):
    pass


def run(cmd, expect=0, timeout=240, env=None):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout, env=env)
    if expect is not None and p.returncode != expect:
        raise Failed("%s exited %d, expected %d\nstdout: %s\nstderr: %s"
                     % (" ".join(cmd), p.returncode, expect, p.stdout[-3000:], p.stderr[-3000:]))
    return p


def train_cmd(args, config, run_dir, tp=1, dp=1, extra=(), resume=None):
    cmd = [args.primal, "train", "--config", config, "--set", "logging.dir=" + run_dir,
           "--set", "parallel.tp=%d" % tp] + list(extra)
    if resume:
        cmd += ["--resume", resume]
    if tp * dp > 1:
        cmd = [args.mpirun, "-np", str(tp * dp), "--oversubscribe"] + cmd
    return cmd


def train(args, config, run_dir, tp=1, dp=1, extra=(), resume=None, expect=0, env=None):
    return run(train_cmd(args, config, run_dir, tp, dp, extra, resume), expect=expect, env=env)


def losses(run_dir):
    """{step: loss} of the training lines of metrics.jsonl (bitwise: the JSON keeps 17 digits)."""
    out = {}
    for line in open(os.path.join(run_dir, "metrics.jsonl")):
        j = json.loads(line)
        if "split" not in j:
            out[j["step"]] = j["loss"]
    return out


def read_safetensors(path):
    return read_tensor_bytes(path)  # raw bytes: compared bit for bit


def final_params(run_dir):
    return read_safetensors(os.path.join(run_dir, "model.safetensors"))


def export(args, checkpoint, out):
    run([args.primal, "export", "--checkpoint", checkpoint, "--out", out])
    return read_safetensors(out)


def snapshot(root):
    """{relative path: sha256} of every file under root."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def step_dir(root, step):
    return os.path.join(root, "step_%08d" % step)


def expect_same_run(failures, what, got_losses, got_params, base_losses, base_params):
    if got_losses != base_losses:
        diff = [s for s in base_losses if got_losses.get(s) != base_losses[s]]
        failures.append("%s: per-step losses differ from the straight run at steps %s"
                        % (what, diff[:5] or sorted(set(got_losses) ^ set(base_losses))[:5]))
    if got_params != base_params:
        diff = [k for k in base_params if got_params.get(k) != base_params[k]]
        failures.append("%s: final parameters differ from the straight run: %s" % (what, diff[:5]))


# ---------------------------------------------------------------------------------------------

def exact_resume(args, tp, dp):
    failures = []
    config = lm_config(args.workdir)
    every = ["--set", "checkpoint.every=10"]
    straight = os.path.join(args.workdir, "straight")
    train(args, config, straight, tp, dp, every)
    split = os.path.join(args.workdir, "split")
    p = train(args, config, split, tp, dp,
              every + ["--set", "checkpoint.stop_at_step=20", "--set", "checkpoint.async_save=true"],
              expect=REQUEUE)
    stopped = losses(split)
    if sorted(stopped) != list(range(1, 21)):
        failures.append("the stopped run logged steps %s, expected 1..20" % sorted(stopped))
    if "exit 75" not in p.stdout:
        failures.append("the stopped run does not say how it ended:\n" + p.stdout[-500:])
    # The torn end of a line, as a process killed while writing it leaves: the resume drops it.
    with open(os.path.join(split, "metrics.jsonl"), "a") as f:
        f.write('{"step":21,"loss":0.12')
    p = train(args, config, split, tp, dp, every + ["--set", "checkpoint.async_save=true"],
              resume="auto")
    if "resumed from" not in p.stdout:
        failures.append("the resumed run does not say where it resumed from")
    expect_same_run(failures, "20 + stop + resume + 20", losses(split), final_params(split),
                    losses(straight), final_params(straight))
    # The background-written checkpoints hold the very bytes the blocking ones do.
    for step in (10, 20, 30, 40):
        a, b = step_dir(straight + "/checkpoints", step), step_dir(split + "/checkpoints", step)
        for f in sorted(os.listdir(a)):
            if f.endswith(".bin") and open(os.path.join(a, f), "rb").read() != open(os.path.join(b, f), "rb").read():
                failures.append("step %d: %s differs between the blocking and background saves" % (step, f))
    if tp > 1:
        # A flipped byte in a shard only TP rank 1 reads: that rank's error reaches every rank,
        # and all fall back to step 30 together, then end where the straight run ends.
        f = step_dir(split + "/checkpoints", 40) + "/shard_1_of_%d.bin" % tp
        data = bytearray(open(f, "rb").read())
        data[len(data) // 6] ^= 0x01
        open(f, "wb").write(bytes(data))
        p = train(args, config, split, tp, dp, every, resume="auto")
        if f not in p.stderr or "rank 1" not in p.stderr or "step_00000030" not in p.stdout:
            failures.append("one rank's bad shard did not make every rank fall back:\n%s\n%s"
                            % (p.stdout[-800:], p.stderr[-800:]))
        expect_same_run(failures, "fallback from a shard only rank 1 reads", losses(split),
                        final_params(split), losses(straight), final_params(straight))
    print("exact resume tp=%d dp=%d: %d steps compared, %d tensors; %s"
          % (tp, dp, len(losses(straight)), len(final_params(straight)),
             "bitwise identical" if not failures else "DIFFERENT"))
    return failures


def wait_for_checkpoint(root, at_least, proc, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            name = open(os.path.join(root, "latest")).read().strip()
            if int(name[5:]) >= at_least:
                return int(name[5:])
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    return None


def rank_pids(tag):
    """{world rank: pid} of the processes whose command line holds tag."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open("/proc/%s/cmdline" % pid, "rb").read().replace(b"\0", b" ").decode()
            if tag not in cmd or "checkpoint_test.py" in cmd or "mpirun" in cmd:
                continue
            env = dict(kv.split(b"=", 1) for kv in open("/proc/%s/environ" % pid, "rb").read().split(b"\0") if b"=" in kv)
        except OSError:
            continue
        if b"OMPI_COMM_WORLD_RANK" in env:
            out[int(env[b"OMPI_COMM_WORLD_RANK"])] = int(pid)
    return out


LONG = 200  # steps of the runs that a signal or a kill interrupts (a few ms each)


def long_straight(args, config, tp, dp):
    straight = os.path.join(args.workdir, "straight")
    train(args, config, straight, tp, dp, ["--set", "checkpoint.every=25"])
    return losses(straight), final_params(straight)


def check_signal(args):
    failures = []
    config = lm_config(args.workdir, steps=LONG)
    base_losses, base_params = long_straight(args, config, 2, 1)
    for how in ("SIGTERM to rank 1", "SIGUSR1 to mpirun"):
        run_dir = os.path.join(args.workdir, how.split()[0].lower())
        proc = subprocess.Popen(train_cmd(args, config, run_dir, 2, 1, ["--set", "checkpoint.every=25"]),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if wait_for_checkpoint(run_dir + "/checkpoints", 25, proc) is None:
            proc.kill()
            return failures + ["%s: training did not reach step 25" % how]
        if how.startswith("SIGTERM"):
            pid = rank_pids(run_dir).get(1)
            if pid is None:
                proc.kill()
                return failures + ["cannot find rank 1"]
            os.kill(pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGUSR1)
        out, _ = proc.communicate(timeout=120)
        latest = open(os.path.join(run_dir, "checkpoints", "latest")).read().strip()
        stop_step = int(latest[5:])
        logged = max(losses(run_dir))
        print("%s: exit %d, stopped after step %d, checkpoint %s" % (how, proc.returncode, logged, latest))
        if proc.returncode != REQUEUE:
            failures.append("%s: exit %d, expected %d\n%s" % (how, proc.returncode, REQUEUE, out[-2000:]))
        if stop_step != logged or stop_step >= LONG:
            failures.append("%s: checkpoint at step %d, last logged step %d" % (how, stop_step, logged))
        train(args, config, run_dir, 2, 1, ["--set", "checkpoint.every=25"], resume="auto")
        expect_same_run(failures, how, losses(run_dir), final_params(run_dir), base_losses, base_params)
    return failures


def check_kill(args):
    failures = []
    config = lm_config(args.workdir, steps=LONG)
    base_losses, base_params = long_straight(args, config, 1, 2)
    run_dir = os.path.join(args.workdir, "killed")
    extra = ["--set", "checkpoint.every=25", "--set", "parallel.watchdog_s=5"]
    proc = subprocess.Popen(train_cmd(args, config, run_dir, 1, 2, extra),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    saved = wait_for_checkpoint(run_dir + "/checkpoints", 25, proc)
    pid = rank_pids(run_dir).get(1)
    if saved is None or pid is None:
        proc.kill()
        return ["the run did not reach a checkpoint at step 25, or rank 1 was not found"]
    os.kill(pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    reached = max(losses(run_dir))
    print("kill: rank 1 killed after step %d (latest checkpoint %d); job exit %d"
          % (reached, saved, proc.returncode))
    if proc.returncode == 0 or reached >= LONG:
        failures.append("the killed job exited %d after step %d" % (proc.returncode, reached))
    p = train(args, config, run_dir, 1, 2, extra, resume="auto")
    print("  restarted: " + next((l for l in p.stdout.splitlines() if "resumed from" in l), "?"))
    expect_same_run(failures, "killed and resumed", losses(run_dir), final_params(run_dir),
                    base_losses, base_params)
    return failures


def check_reshard(args):
    failures = []
    config = lm_config(args.workdir)
    straight = os.path.join(args.workdir, "straight")
    train(args, config, straight, 2, 2)
    base = losses(straight)
    saved = os.path.join(args.workdir, "saved")
    train(args, config, saved, 2, 2, ["--set", "checkpoint.stop_at_step=20"], expect=REQUEUE)
    ck = step_dir(saved + "/checkpoints", 20)
    reference = export(args, ck, os.path.join(args.workdir, "saved.safetensors"))
    for tp, dp in ((1, 1), (1, 4), (4, 1)):
        tag = "%dx%d" % (tp, dp)
        # Loaded and nothing trained (train.steps = the checkpoint's step): model.safetensors
        # holds the loaded parameters, gathered from this layout's shards.
        loaded = os.path.join(args.workdir, "loaded_" + tag)
        train(args, config, loaded, tp, dp, ["--set", "train.steps=20", "--set", "schedule.warmup_steps=4"],
              resume=ck)
        if final_params(loaded) != reference:
            failures.append("%s: the loaded parameters differ from the checkpoint's" % tag)
        # Its own checkpoint of the same state, saved under this layout, exports the same.
        again = export(args, loaded + "/checkpoints", os.path.join(args.workdir, tag + ".safetensors"))
        if again != reference:
            failures.append("%s: re-saved under this layout, the parameters differ" % tag)
        cont = os.path.join(args.workdir, "continued_" + tag)
        train(args, config, cont, tp, dp, resume=ck)
        got = losses(cont)
        err = max(abs(got[s] - base[s]) / abs(base[s]) for s in range(21, 41))
        print("reshard (2,2) -> (%d,%d): parameters after loading bitwise equal: %s; max rel loss "
              "diff over steps 21..40: %.2e" % (tp, dp, final_params(loaded) == reference, err))
        if sorted(got) != list(range(21, 41)) or err > 1e-5:
            failures.append("%s: continued losses differ by %.2e (steps %s)" % (tag, err, sorted(got)[:3]))
    return failures


def one_error_line(p, path):
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    return len(lines) == 1 and lines[0].startswith("primal: error:") and path in lines[0]


def check_damage(args):
    failures = []
    config = lm_config(args.workdir, steps=20)
    extra = ["--set", "checkpoint.every=5"]
    straight = os.path.join(args.workdir, "straight")
    train(args, config, straight, extra=extra)
    base_losses, base_params = losses(straight), final_params(straight)
    pristine = straight + "/checkpoints"
    other_config = lm_config(args.workdir, steps=20, width=48, name="other.pbtxt")
    other = os.path.join(args.workdir, "other")
    train(args, other_config, other, extra=extra)

    def truncate(ck):
        f = ck + "/shard_0_of_1.bin"
        os.truncate(f, os.path.getsize(f) // 2)
        return f

    def flip(ck):
        f = ck + "/shard_0_of_1.bin"
        data = bytearray(open(f, "rb").read())
        data[len(data) // 6] ^= 0x04  # among the parameter values: every reader needs them
        open(f, "wb").write(bytes(data))
        return f

    def drop_manifest(ck):
        os.remove(ck + "/manifest.pb")
        return ck + "/manifest.pb"

    def bump_version(ck):
        f = ck + "/manifest.pb"
        data = open(f, "rb").read()
        assert data[:2] == b"\x08\x01", "format_version is field 1, serialised first"
        open(f, "wb").write(b"\x08\x63" + data[2:])
        return f

    def other_model(ck):
        shutil.rmtree(ck)
        shutil.copytree(step_dir(other + "/checkpoints", 20), ck)
        return ck + "/manifest.pb"

    cases = [("truncated shard", truncate, "truncated"), ("flipped byte", flip, "checksum mismatch"),
             ("missing manifest", drop_manifest, "missing"),
             ("wrong format version", bump_version, "format version 99"),
             ("another model's checkpoint", other_model, "another model")]
    for name, damage, words in cases:
        root = os.path.join(args.workdir, name.replace(" ", "_").replace("'", ""))
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(pristine, root + "/checkpoints")
        shutil.copy(straight + "/metrics.jsonl", root)  # the same run directory, resumed
        bad = step_dir(root + "/checkpoints", 20)
        path = damage(bad)
        before = snapshot(root + "/checkpoints")
        problems = []
        commands = [("train --resume DIR", train_cmd(args, config, root, extra=extra, resume=bad)),
                    ("eval --checkpoint", [args.primal, "eval", "--config", config,
                                           "--checkpoint", bad, "--data",
                                           os.path.join(args.workdir, "corpus.txt")])]
        if damage is not other_model:  # another model's checkpoint is a good checkpoint
            commands.append(("export", [args.primal, "export", "--checkpoint", root + "/checkpoints",
                                        "--out", os.path.join(args.workdir, "x.safetensors")]))
        for what, cmd in commands:
            p = run(cmd, expect=None)
            if p.returncode != BAD_INPUT or not one_error_line(p, path) or words not in p.stderr:
                problems.append("%s: exit %d, stderr %r" % (what, p.returncode, p.stderr[-600:]))
        if snapshot(root + "/checkpoints") != before:
            problems.append("a failed load changed or deleted files")
        # auto: warns naming the file, resumes from step 15, ends like the straight run.
        p = train(args, config, root, extra=extra, resume="auto")
        warned = [l for l in p.stderr.splitlines() if "warning" in l and path in l]
        if not warned or step_dir(root + "/checkpoints", 15) not in p.stdout:
            problems.append("auto: no warning naming %s, or not resumed from step 15:\n%s\n%s"
                            % (path, p.stdout[-800:], p.stderr[-800:]))
        expect_same_run(problems, name + ", auto", losses(root), final_params(root),
                        base_losses, base_params)
        # Nothing was deleted or changed: the damaged step_20 was moved aside, not replaced.
        after = snapshot(root + "/checkpoints")
        for f, digest in before.items():
            moved = f.replace("step_00000020/", "step_00000020.replaced-1/")
            if after.get(f) != digest and after.get(moved) != digest:
                problems.append("%s was deleted or changed" % f)
        print("%-28s %s  (%s)" % (name, "ok" if not problems else "FAIL", warned[0][:150] if warned else "-"))
        failures += ["%s: %s" % (name, x) for x in problems]
    return failures


def check_interrupted_save(args):
    failures = []
    config = lm_config(args.workdir, steps=20)
    extra = ["--set", "checkpoint.every=5"]
    straight = os.path.join(args.workdir, "straight")
    train(args, config, straight, extra=extra)
    base_losses, base_params = losses(straight), final_params(straight)
    for phase in range(1, 7):
        run_dir = os.path.join(args.workdir, "phase%d" % phase)
        env = dict(os.environ, PRIMAL_CHECKPOINT_FAULT="%d:15" % phase)
        p = train(args, config, run_dir, extra=extra, expect=None, env=env)
        killed = p.returncode == -signal.SIGKILL
        latest = open(run_dir + "/checkpoints/latest").read().strip()
        p2 = train(args, config, run_dir, extra=extra, resume="auto")
        resumed = next((l for l in p2.stdout.splitlines() if "resumed from" in l), "?")
        expected = "step_00000015" if phase == 6 else "step_00000010"
        ok = killed and latest == expected and expected in resumed
        print("save of step 15 killed at phase %d: exit %d, latest %s, %s" % (phase, p.returncode, latest, resumed))
        if not ok:
            failures.append("phase %d: killed %s, latest %s, resumed: %s" % (phase, killed, latest, resumed))
        expect_same_run(failures, "phase %d" % phase, losses(run_dir), final_params(run_dir),
                        base_losses, base_params)
    return failures


CHECKS = {
    "ExactResumeOneProcess": lambda a: exact_resume(a, 1, 1),
    "ExactResumeTp2Dp2": lambda a: exact_resume(a, 2, 2),
    "SignalOnOneRankStopsAllAtOneStep": check_signal,
    "KilledRankResumesBitwise": check_kill,
    "ReshardTp2Dp2ToOtherLayouts": check_reshard,
    "DamagedCheckpointsNameTheFileAndAutoFallsBack": check_damage,
    "SaveKilledAtEveryPhaseLeavesThePreviousLoadable": check_interrupted_save,
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--primal", required=True)
    parser.add_argument("--mpirun", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("check", choices=sorted(CHECKS))
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    start = time.time()
    try:
        failures = CHECKS[args.check](args)
    except Failed as e:
        failures = [str(e)]
    for f in failures:
        print("FAIL: " + f)
    print("%s: %s in %.1f s" % (args.check, "FAILED" if failures else "passed", time.time() - start))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
