"""The machine's own limits, measured in the same run as the migrations:
TCP loopback with iperf3 (1 and 2 streams), memcpy of 1 GiB, first touch
of 1 GiB cold and warm, and the zero-page scan rate (bench/limits.c,
compiled here with cc -O2). Every figure is MB/s (10^6 bytes/s)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "lib"))
from godwit_vm import die_with_parent, free_tcp_port  # noqa: E402

LIMITS_C = os.path.join(os.path.dirname(os.path.abspath(__file__)), "limits.c")
SIZE_MIB = 1024


def iperf3(streams, seconds):
    """Loopback TCP throughput, 127.0.0.1 only: a one-off server and a client."""
    port = free_tcp_port()
    server = subprocess.Popen(["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              preexec_fn=die_with_parent)
    try:
        for _ in range(100):   # until the server listens
            probe = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port),
                                    "-P", str(streams), "-J", "-t", str(seconds)],
                                   capture_output=True, text=True, timeout=seconds + 30)
            result = json.loads(probe.stdout or "{}")
            if "error" in result and "connect" in result["error"]:
                time.sleep(0.1)
                continue
            if "error" in result:
                raise RuntimeError(result["error"])
            return result["end"]["sum_received"]["bits_per_second"] / 8 / 1e6
        raise RuntimeError("the iperf3 server never listened")
    finally:
        server.kill()
        server.wait()


class LimitsProgram:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="godwit-limits-")
        self.binary = os.path.join(self.dir, "limits")
        subprocess.run(["cc", "-O2", "-o", self.binary, LIMITS_C], check=True)

    def run(self, what):
        out = subprocess.run([self.binary, what, str(SIZE_MIB)], capture_output=True, text=True,
                             check=True, timeout=300).stdout
        return {r["what"]: r["mbs"] for r in map(json.loads, out.splitlines())}

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


# key, label, what each figure bounds
LIMITS = [
    ("tcp1", "TCP loopback, iperf3, 1 stream", "a 1-channel migration's transfer"),
    ("tcp2", "TCP loopback, iperf3, 2 streams", "2 channels (multifd)"),
    ("memcpy", "memcpy 1 GiB (best of 3)", "any copy of guest RAM"),
    ("touch-cold-thp", "first touch 1 GiB cold, THP", "a cold destination (after 15 s idle)"),
    ("touch-cold-4k", "first touch 1 GiB cold, 4 KiB pages", "the same without huge pages"),
    ("touch-warm-thp", "first touch 1 GiB warm, THP", "memory just freed by this machine"),
    ("touch-warm-4k", "first touch 1 GiB warm, 4 KiB pages", "the same without huge pages"),
    ("zeroscan", "zero-page scan of 1 GiB (best of 3)", "reading RAM to find zero pages"),
]


def measure(cold_wait, iperf_seconds, log):
    """All the limits, as {key: MB/s}; a limit that cannot be measured is
    absent and its reason is in the returned notes."""
    figures, notes = {}, {}
    if shutil.which("iperf3"):
        for streams in (1, 2):
            try:
                figures[f"tcp{streams}"] = iperf3(streams, iperf_seconds)
            except (RuntimeError, ValueError, KeyError, subprocess.SubprocessError) as error:
                notes[f"tcp{streams}"] = f"iperf3 failed: {error}"
            log(f"limit tcp{streams}: {figures.get(f'tcp{streams}', notes.get(f'tcp{streams}'))}")
    else:
        notes["tcp1"] = notes["tcp2"] = "iperf3 is not installed (scripts/setup-deps --bench)"
    try:
        program = LimitsProgram()
    except (OSError, subprocess.CalledProcessError) as error:
        for key in ("memcpy", "touch-cold-thp", "touch-cold-4k", "touch-warm-thp",
                    "touch-warm-4k", "zeroscan"):
            notes[key] = f"cannot compile bench/limits.c: {error}"
        return figures, notes
    try:
        for what in ("memcpy", "zeroscan", "touch"):
            if what == "touch":
                log(f"limits: {cold_wait:.0f} s idle before first touch, so memory is cold")
                time.sleep(cold_wait)
            try:
                figures.update(program.run(what))
            except (subprocess.SubprocessError, ValueError) as error:
                notes[what] = f"bench/limits.c {what} failed: {error}"
            log(f"limit {what}: " + ", ".join(f"{k} {v:.0f}" for k, v in figures.items()
                                             if k.startswith(what[:5])))
    finally:
        program.close()
    return figures, notes
