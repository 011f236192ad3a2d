"""Where a /rank's tail comes from: this checkout under the mixed load, with the server's own
figures, each process's CPU and, optionally, sampling profiles of serve and worker.

    .venv/bin/python -m bench.e2e.stalls --rates 30 --seconds 15
    .venv/bin/python -m bench.e2e.stalls --rates 30 --env SOLAR_GC_FREEZE=false
    .venv/bin/python -m bench.e2e.stalls --rates 30 --profile /tmp/spy   # needs py-spy

The load and the seeding are ``bench.e2e.loadrange``'s (one side, no baseline: compare
settings with ``--env`` in separate runs close in time, and quote the load average). Per rate
it prints the client's /rank p50/p99, the CPU cores serve and worker used (``/proc``) and the
load generator's own; serve's threads apart (the event loop, the ``solar-batch-N`` threads,
the rest; ``/proc/<pid>/task``): the cores each group used, its run-queue wait (runnable, no
core free) as a share of the run and its context switches per second (summed over the
group), and the batch threads' CPU per scored /rank; the machine's steal time (a VM's cores
taken by its host); and the run's histograms of the service and the worker
(``loadtest/server_metrics.py``): stage p99s, passes of a new shape, GC pauses, event-loop
lag, apply lag. ``--profile PREFIX`` records ``py-spy`` (raw collapsed stacks, 50 Hz) of both
processes while each rate runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.common import harness
from bench.common.mixed import MixedLoad, measure_mixed
from loadtest.server_metrics import fetch, run_figures

logger = logging.getLogger("bench.e2e.stalls")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ThreadTimes:
    """Totals of a group of threads: on-CPU and run-queue wait seconds (``schedstat``) and
    context switches (``status``, voluntary + involuntary)."""

    cpu_s: float = 0.0
    wait_s: float = 0.0
    switches: int = 0

    def __add__(self, other: ThreadTimes) -> ThreadTimes:
        return ThreadTimes(
            self.cpu_s + other.cpu_s, self.wait_s + other.wait_s, self.switches + other.switches
        )

    def __sub__(self, other: ThreadTimes) -> ThreadTimes:
        return ThreadTimes(
            self.cpu_s - other.cpu_s, self.wait_s - other.wait_s, self.switches - other.switches
        )


def thread_times(pid: int) -> dict[int, tuple[str, ThreadTimes]]:
    """Process ``pid``'s threads by thread id: the group each belongs to, "loop" (its main
    thread), "batch" (kernel name ``solar-batch-N``, ``service.runtime.name_os_thread``, and
    threads those started) or "other", and its totals so far."""
    threads: dict[int, tuple[str, ThreadTimes]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            on_cpu_ns, wait_ns = map(int, (task / "schedstat").read_text().split()[:2])
            status = (task / "status").read_text().splitlines()
        except (OSError, ValueError):
            continue  # the thread ended meanwhile
        switches = sum(int(line.split()[1]) for line in status if "ctxt_switches" in line)
        group = "loop" if task.name == str(pid) else "batch" if "solar-batch" in name else "other"
        threads[int(task.name)] = (group, ThreadTimes(on_cpu_ns / 1e9, wait_ns / 1e9, switches))
    return threads


def group_deltas(
    before: dict[int, tuple[str, ThreadTimes]], after: dict[int, tuple[str, ThreadTimes]]
) -> dict[str, ThreadTimes]:
    """Per group, what its threads did between the two readings (each thread's difference,
    then summed: a thread started in between counts from zero, one that ended is left out)."""
    groups: dict[str, ThreadTimes] = {}
    for tid, (group, times) in after.items():
        used = times - before[tid][1] if tid in before else times
        groups[group] = groups.get(group, ThreadTimes()) + used
    return groups


def steal_s() -> float:
    """Seconds of this machine's CPU time its hypervisor gave to others (``/proc/stat``)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK")


def thread_line(
    before: dict[int, tuple[str, ThreadTimes]],
    after: dict[int, tuple[str, ThreadTimes]],
    seconds: float,
    ranks: int,
) -> str:
    """One line: per thread group, cores used, run-queue wait as a share of the run (summed
    over the group's threads) and switches per second; the batch threads' CPU per /rank."""
    used = group_deltas(before, after)
    parts = [
        f"{group} {used[group].cpu_s / seconds:.2f} cores (run-queue wait "
        f"{100 * used[group].wait_s / seconds:.0f}% of the run, "
        f"{used[group].switches / seconds:.0f} switches/s)"
        for group in ("loop", "batch", "other")
        if group in used
    ]
    batch = used.get("batch", ThreadTimes())
    per_rank = f"; batch CPU {1e3 * batch.cpu_s / ranks:.2f} ms per /rank" if ranks else ""
    return "serve threads: " + ", ".join(parts) + per_rank


def process_pid(pattern: str, marker: str) -> int:
    """The process whose command line matches ``pattern`` and environment holds ``marker``."""
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    for pid in map(int, found.split()):
        try:
            if marker in Path(f"/proc/{pid}/environ").read_text(errors="replace"):
                return pid
        except OSError:
            continue
    raise RuntimeError(f"no process matches {pattern!r}")


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rates", type=float, nargs="+", default=[30.0])
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--env", nargs="*", default=[], help="SOLAR_*=VALUE for serve and worker")
    p.add_argument("--profile", default=None, help="py-spy output prefix (none: no profile)")
    p.add_argument("--users", type=int, default=2_000)
    p.add_argument("--seed-users", type=int, default=200)
    p.add_argument("--events", type=int, default=2_000)
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="solar-stalls-") as tmp:
        model = harness.random_checkpoint(Path(tmp) / "model", n_items=10_000)
        items = harness.vocabulary(model)
        users = [f"lr{u}" for u in range(args.users)]
        load = MixedLoad(users, items, actions=harness.actions(model))
        env = {
            "SOLAR_LOG_CAP": "16384",
            "SOLAR_APPLIER": "external",
            **dict(e.split("=", 1) for e in args.env),
        }
        with harness.redis_server() as redis_url, harness.postgres_history() as history_url:
            env["SOLAR_HISTORY_URL"] = history_url  # serve and worker share the history
            with (
                harness.service(model, redis_url, env=env) as base,
                harness.worker(model, redis_url, env=env) as worker_url,
            ):
                seeded = harness.seed_users(
                    base, users[: args.seed_users], args.events, items, kinds=harness.actions(model)
                )
                while httpx.get(f"{base}/users/{users[args.seed_users - 1]}").json()["pending"]:
                    time.sleep(0.5)
                print(f"seeded {seeded.events} events ({args.env or 'defaults'})", flush=True)
                port = base.rsplit(":", 1)[1]
                serve = process_pid(f"service.cli serve --host 127.0.0.1 --port {port}", tmp)
                worker = process_pid("service.cli worker", tmp)
                for rate in args.rates:
                    before = fetch(f"{base}/metrics"), fetch(worker_url)
                    cpu0 = cpu_s(serve), cpu_s(worker)
                    threads0, steal0 = thread_times(serve), steal_s()
                    spies = [
                        subprocess.Popen(
                            [
                                str(Path(sys.executable).with_name("py-spy")),
                                "record",
                                "-p",
                                str(pid),
                                "-d",
                                str(int(args.seconds)),
                                "-r",
                                "50",
                                "-f",
                                "raw",
                                "-o",
                                f"{args.profile}-{name}-{rate:.0f}.txt",
                                "--nonblocking",
                            ],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT,
                        )
                        for name, pid in (("serve", serve), ("worker", worker))
                        if args.profile
                    ]
                    result = measure_mixed(base, load, rate=rate, seconds=args.seconds)
                    cpu1 = cpu_s(serve), cpu_s(worker)
                    threads1, steal1 = thread_times(serve), steal_s()
                    for spy in spies:
                        spy.wait()
                    figures = {
                        "serve": run_figures(before[0], fetch(f"{base}/metrics")),
                        "worker": run_figures(before[1], fetch(worker_url)),
                    }
                    print(
                        f"rate {rate:.0f}/s: /rank p50 {result.rank_ms(50):.1f} ms, p99 "
                        f"{result.rank_ms(99):.1f} ms, {len(result.rank_s)} ok, {result.failures} "
                        f"failed; CPU serve {(cpu1[0] - cpu0[0]) / result.seconds:.2f} cores, "
                        f"worker {(cpu1[1] - cpu0[1]) / result.seconds:.2f}, load generator "
                        f"{result.generator_cpu_s / result.seconds:.2f}; load average "
                        f"{os.getloadavg()[0]:.1f}; steal {(steal1 - steal0) / result.seconds:.2f} "
                        "cores"
                    )
                    print(thread_line(threads0, threads1, result.seconds, len(result.rank_s)))
                    print(json.dumps(figures, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
