#!/usr/bin/env python3
"""The real `tensorboard` package reads primal's event files.

tb_write_sample writes an event file and a manifest of what it wrote. Then, with tensorboard's
own readers:
  1. EventAccumulator (size_guidance 0: keep everything) finds every scalar tag with every step and
     the float32 value bit for bit, and every histogram with its num, sum, min, max, sum of squares
     and each value in its bucket;
  2. plugin_event_accumulator, the path the TensorBoard server takes to draw the dashboards, sees
     the same scalars and histograms after its data_compat migration;
  3. a copy with one flipped byte (in the data of a record, or in its length) fails tensorboard's
     CRC check: its pure-Python record reader raises DataLossError ("failed event crc32 check" or
     "failed header crc32 check") at that record, and EventAccumulator, which swallows the
     DataLossError as a possibly truncated record, loads exactly the events before the damage.

tensorboard is imported from the interpreter running this script if it can be; otherwise it is
installed from PyPI into --venv (once; a marker file holding the pip spec makes later runs reuse
it) and the script re-runs itself there. If PyPI cannot be reached the test prints SKIPPED with
the reason and exits 77.
"""

import argparse
import bisect
import fcntl
import math
import os
import shutil
import struct
import subprocess
import sys
import time
import urllib.request

SKIP = 77
IN_VENV = "PRIMAL_TENSORBOARD_TEST_IN_VENV"


def fail(message):
    print("FAILED: " + message, file=sys.stderr)
    sys.exit(1)


def skip(reason):
    print("SKIPPED: " + reason)
    sys.exit(SKIP)


# --- tensorboard, imported here or installed into a virtualenv -------------------------------


def pypi_unreachable_reason():
    """None if the package index answers, else why not."""
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    url = index + "/tensorboard/"
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            response.read(1)
        return None
    except Exception as e:  # any failure to fetch means: unreachable from here
        return "PyPI index {} cannot be reached: {}".format(url, e)


def ensure_tensorboard(args):
    """Returns when tensorboard is importable; otherwise re-runs this script in the venv."""
    try:
        import tensorboard  # noqa: F401

        return
    except ImportError as e:
        if os.environ.get(IN_VENV):
            fail("tensorboard still cannot be imported in {}: {}".format(sys.prefix, e))

    venv_python = os.path.join(args.venv, "bin", "python")
    marker = os.path.join(args.venv, "primal-installed")
    os.makedirs(os.path.dirname(os.path.abspath(args.venv)), exist_ok=True)
    with open(args.venv + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one installer at a time (ctest -j, two build trees)
        installed = None
        if os.path.exists(marker) and os.path.exists(venv_python):
            with open(marker) as f:
                installed = f.read().strip()
        if installed != args.pip_spec:
            start = time.monotonic()
            print("installing {} into {}".format(args.pip_spec, args.venv), flush=True)
            shutil.rmtree(args.venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", args.venv], check=True)
            pip = subprocess.run(
                [venv_python, "-m", "pip", "install", "--timeout", "30", "--retries", "2",
                 args.pip_spec],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if pip.returncode != 0:
                reason = pypi_unreachable_reason()
                shutil.rmtree(args.venv, ignore_errors=True)
                last = pip.stdout.strip().splitlines()[-1:] or ["(no output)"]
                if reason:
                    skip("{} (pip install {}: {})".format(reason, args.pip_spec, last[0]))
                fail("pip install {} failed although PyPI answers:\n{}".format(
                    args.pip_spec, pip.stdout))
            with open(marker, "w") as f:
                f.write(args.pip_spec + "\n")
            print("installed in {:.1f} s".format(time.monotonic() - start), flush=True)
    env = dict(os.environ, **{IN_VENV: "1"})
    script = os.path.abspath(__file__)
    os.execve(venv_python, [venv_python, script] + sys.argv[1:], env)


# --- what tb_write_sample wrote ----------------------------------------------------------------


def run_writer(writer, logdir):
    shutil.rmtree(logdir, ignore_errors=True)
    manifest_path = logdir + ".manifest"
    subprocess.run([writer, logdir, manifest_path], check=True)
    event_file, entries = None, []
    with open(manifest_path) as f:
        for line in f:
            fields = line.split()
            if fields[0] == "file":
                event_file = line[len("file "):].rstrip("\n")
            elif fields[0] == "scalar":
                entries.append(("scalar", fields[1], int(fields[2]), float.fromhex(fields[3])))
            elif fields[0] == "histogram":
                values = [float.fromhex(v) for v in fields[4:]]
                if len(values) != int(fields[3]):
                    fail("manifest line for {} is cut short".format(fields[1]))
                entries.append(("histogram", fields[1], int(fields[2]), values))
    return event_file, entries


def record_offsets(data):
    """Start of every TFRecord in data (trusting the lengths: the intact file)."""
    offsets, at = [], 0
    while at < len(data):
        offsets.append(at)
        (length,) = struct.unpack_from("<Q", data, at)
        at += 12 + length + 4
    if at != len(data):
        fail("the intact event file does not end on a record boundary")
    return offsets


def f32_bits(x):
    return struct.pack("<f", x)


def by_tag(entries, kind):
    tags = {}
    for entry in entries:
        if entry[0] == kind:
            tags.setdefault(entry[1], []).append(entry)
    return tags


def full_size_guidance(module):
    return {key: 0 for key in module.DEFAULT_SIZE_GUIDANCE}


# --- the checks --------------------------------------------------------------------------------


def check_event_accumulator(logdir, entries):
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(logdir, size_guidance=full_size_guidance(ea))
    acc.Reload()
    if acc.file_version != 2.0:
        fail("file_version read as {!r}, want 2.0 (brain.Event:2)".format(acc.file_version))
    scalars, histograms = by_tag(entries, "scalar"), by_tag(entries, "histogram")
    tags = acc.Tags()
    if sorted(tags["scalars"]) != sorted(scalars):
        fail("scalar tags {} != written {}".format(sorted(tags["scalars"]), sorted(scalars)))
    if sorted(tags["histograms"]) != sorted(histograms):
        fail("histogram tags {} != written {}".format(sorted(tags["histograms"]),
                                                       sorted(histograms)))
    n_scalars = 0
    for tag, written in scalars.items():
        read = acc.Scalars(tag)
        if len(read) != len(written):
            fail("{}: {} scalars read, {} written".format(tag, len(read), len(written)))
        for event, (_, _, step, value) in zip(read, written):
            if event.step != step or f32_bits(event.value) != f32_bits(value):
                fail("{}: read step {} value {!r}, written step {} value {!r}".format(
                    tag, event.step, event.value, step, value))
            n_scalars += 1
    n_histograms = 0
    for tag, written in histograms.items():
        read = acc.Histograms(tag)
        if len(read) != len(written):
            fail("{}: {} histograms read, {} written".format(tag, len(read), len(written)))
        for event, (_, _, step, values) in zip(read, written):
            h = event.histogram_value
            where = "{} at step {}".format(tag, step)
            if event.step != step:
                fail("{}: read at step {}".format(where, event.step))
            total = 0.0
            for v in values:  # in the writer's order, so the double sum is the same
                total += v
            want = {"num": float(len(values)), "sum": total, "min": min(values),
                    "max": max(values)}
            got = {"num": h.num, "sum": h.sum, "min": h.min, "max": h.max}
            if got != want:
                fail("{}: read {} want {}".format(where, got, want))
            squares = math.fsum(v * v for v in values)
            if not math.isclose(h.sum_squares, squares, rel_tol=1e-12):
                fail("{}: sum_squares {} want {}".format(where, h.sum_squares, squares))
            # bucket[i] counts limit[i-1] <= v < limit[i]; count the values again that way.
            limits = list(h.bucket_limit)
            if limits != sorted(limits) or len(limits) != len(h.bucket):
                fail("{}: bucket limits unsorted or not one per bucket".format(where))
            counts = [0.0] * len(limits)
            for v in values:
                counts[bisect.bisect_right(limits, v)] += 1.0
            if counts != list(h.bucket):
                fail("{}: bucket counts {} want {}".format(where, list(h.bucket), counts))
            n_histograms += 1
    print("EventAccumulator: {} scalars under {} tags and {} histograms under {} tags match".format(
        n_scalars, len(scalars), n_histograms, len(histograms)))


def check_plugin_event_accumulator(logdir, entries):
    """The TensorBoard server's path: values migrated to tensors by data_compat."""
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea
    from tensorboard.util import tensor_util

    acc = pea.EventAccumulator(logdir, size_guidance=full_size_guidance(pea))
    acc.Reload()
    written = by_tag(entries, "scalar")
    written.update(by_tag(entries, "histogram"))
    if sorted(acc.Tags()["tensors"]) != sorted(written):
        fail("plugin tensors {} != written tags {}".format(sorted(acc.Tags()["tensors"]),
                                                          sorted(written)))
    for tag, want in written.items():
        read = acc.Tensors(tag)
        if [e.step for e in read] != [w[2] for w in want]:
            fail("plugin {}: steps {} want {}".format(tag, [e.step for e in read],
                                                      [w[2] for w in want]))
        for event, (kind, _, step, value) in zip(read, want):
            array = tensor_util.make_ndarray(event.tensor_proto)
            if kind == "scalar":
                if f32_bits(float(array)) != f32_bits(value):
                    fail("plugin {} step {}: {} want {}".format(tag, step, float(array), value))
            else:  # rows [left edge, right edge, count], edges clipped to min and max (float32)
                if array.shape[1] != 3 or array[:, 2].sum() != len(value):
                    fail("plugin {} step {}: buckets hold {} of {} values".format(
                        tag, step, array[:, 2].sum(), len(value)))
                lo, hi = struct.unpack("<2f", struct.pack("<2f", min(value), max(value)))
                if array[0, 0] != lo or array[-1, 1] != hi:
                    fail("plugin {} step {}: range [{}, {}] want [{}, {}]".format(
                        tag, step, array[0, 0], array[-1, 1], lo, hi))
    print("plugin_event_accumulator: every tag, step and value matches after data_compat")


def events_in(logdir):
    """(tag, step) of every scalar and histogram EventAccumulator loads from logdir."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(logdir, size_guidance=full_size_guidance(ea))
    acc.Reload()  # must not raise: the loader swallows the DataLossError
    tags = acc.Tags()
    loaded = [(t, e.step) for t in tags["scalars"] for e in acc.Scalars(t)]
    loaded += [(t, e.step) for t in tags["histograms"] for e in acc.Histograms(t)]
    return sorted(loaded)


def check_damage(intact_file, entries, workdir, name, byte_in_record, want_message):
    from tensorboard.compat.tensorflow_stub import errors
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow

    with open(intact_file, "rb") as f:
        data = bytearray(f.read())
    offsets = record_offsets(data)
    damaged_record = len(offsets) // 2
    data[offsets[damaged_record] + byte_in_record] ^= 0xFF
    logdir = os.path.join(workdir, name)
    shutil.rmtree(logdir, ignore_errors=True)
    os.makedirs(logdir)
    path = os.path.join(logdir, os.path.basename(intact_file))
    with open(path, "wb") as f:
        f.write(data)

    # tensorboard's own record reader: intact records read, then DataLossError at the damage.
    reader = pywrap_tensorflow.PyRecordReader_New(path.encode(), 0, b"", None)
    good = 0
    try:
        while True:
            reader.GetNext()
            good += 1
    except errors.DataLossError as e:
        if want_message not in str(e):
            fail("{}: DataLossError {!r} does not say {!r}".format(name, str(e), want_message))
        print("{}: tensorboard's reader raised DataLossError after {} records: {}".format(
            name, good, e))
    except errors.OutOfRangeError:
        fail("{}: tensorboard read the damaged file to its end without a CRC error".format(name))
    if good != damaged_record:
        fail("{}: {} records read before the error, want {}".format(name, good, damaged_record))

    # EventAccumulator: exactly the events before the damaged record (record 0 is file_version,
    # record i > 0 is manifest entry i - 1), none after it.
    want = sorted((e[1], e[2]) for e in entries[:damaged_record - 1])
    got = events_in(logdir)
    if got != want:
        fail("{}: EventAccumulator loaded {} events, want the {} before record {}".format(
            name, len(got), len(want), damaged_record))
    print("{}: EventAccumulator kept the {} events before record {} and dropped the {} after".format(
        name, len(got), damaged_record, len(entries) - len(got)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writer", required=True, help="the tb_write_sample executable")
    parser.add_argument("--venv", required=True, help="virtualenv to install tensorboard into")
    parser.add_argument("--pip-spec", default="tensorboard", help="what pip installs")
    parser.add_argument("--workdir", required=True, help="scratch directory for event files")
    args = parser.parse_args()
    start = time.monotonic()
    ensure_tensorboard(args)
    import tensorboard

    print("tensorboard {} from {} (python {})".format(
        tensorboard.__version__, os.path.dirname(tensorboard.__file__), sys.version.split()[0]))
    os.makedirs(args.workdir, exist_ok=True)
    logdir = os.path.join(args.workdir, "intact")
    event_file, entries = run_writer(args.writer, logdir)
    check_event_accumulator(logdir, entries)
    check_plugin_event_accumulator(logdir, entries)
    # A byte in the middle of the record's data, and the low byte of its length.
    with open(event_file, "rb") as f:
        data = f.read()
    offsets = record_offsets(data)
    middle = offsets[len(offsets) // 2]
    (length,) = struct.unpack_from("<Q", data, middle)
    check_damage(event_file, entries, args.workdir, "damaged_data", 12 + length // 2,
                 "failed event crc32 check")
    check_damage(event_file, entries, args.workdir, "damaged_length", 0,
                 "failed header crc32 check")
    print("PASSED in {:.1f} s".format(time.monotonic() - start))


if __name__ == "__main__":
    main()
