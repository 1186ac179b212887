"""Benchmark: what running ingest as a tracked Prefect flow costs over running the same driver directly.

    python benchmarks/flow_overhead.py [--dataset ../shared/datasets/cranfield] [--rounds 3]

Starts a real ``prefect server`` (temporary PREFECT_HOME, loopback port), then alternates two kinds of fresh
process, each with a new state home: *direct* calls ``ragline.indexing.pipeline.ingest`` with in-process steps;
*flow* calls ``ingest_flow`` against the server, which runs the same driver with every stage of every batch as a
task run. Both load the model and import Great Expectations before the clock starts, so the timed part is the
first ingest of the corpus and, for the flow, the flow run itself (creation, task runs, artifacts).

Reports median seconds of each and the overhead: the median over rounds of flow / direct − 1, each round's pair run
back to back so that a change in the machine's speed falls on both (the ratio of the two medians too); and the same
in CPU seconds: the run's process (all its threads) plus, for the flow, everything the Prefect server's processes
did meanwhile. Wall time is what a user waits for; CPU seconds are what the machine's other jobs cannot move much.
``--server-nice 19`` runs the server at the lowest CPU priority: on this 2-core machine the server otherwise
competes with the model for the cores, which a server on a host of its own (production) does not; its CPU seconds
are reported either way. Writes benchmarks/results/flow_overhead.json (``flow_overhead_server_nice19.json``).

The datasets under ../shared are for benchmarks only: without them this script says so and exits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "flow_overhead.json"


def child(kind: str, dataset: Path, home: Path) -> None:
    """One measured ingest in this process; prints ``{"seconds": ..., "stats": ...}``."""
    from ragline.components import components_for
    from ragline.config import load_config
    from ragline.indexing.validation import warm_up

    config = load_config(home=home, namespace="bench")  # as the flow builds it: models dir from the environment
    c = components_for(config)  # the flow's tasks find these same components, model loaded
    c.embedder.embed(["warm up the model"])
    warm_up()
    if kind == "direct":
        from ragline.indexing.pipeline import ingest
        from ragline.sources import open_source

        start, cpu = time.perf_counter(), time.process_time()
        stats = ingest(c, open_source(dataset)).stats.as_dict()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    else:
        from ragline.flows.ingest import ingest_flow

        start, cpu = time.perf_counter(), time.process_time()
        stats = ingest_flow(str(dataset), namespace="bench", home=str(home))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu": cpu,
                "stats": {k: v for k, v in stats.items() if k != "seconds"},
            }
        )
    )


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants, from /proc (Linux)."""
    total, pending = 0.0, [pid]
    ticks = os.sysconf("SC_CLK_TCK")
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(prefect_home: Path, nice: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=(lambda: os.nice(nice)) if nice else None,  # every thread and child of the server inherits it
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return server, url
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("prefect server did not become healthy within 120 s")


def measure(kind: str, dataset: Path, models_dir: Path, env: dict[str, str]) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as home:
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                kind,
                "--dataset",
                str(dataset),
                "--home",
                home,
                "--models-dir",
                str(models_dir),
            ],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise SystemExit(f"{kind} run failed:\n{done.stderr[-3000:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset",
        type=Path,
        default=REPO.parent / "shared" / "datasets" / "cranfield",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models-dir", type=Path, default=REPO / "data" / ".ragline" / "models")
    parser.add_argument(
        "--server-nice",
        type=int,
        default=0,
        help="niceness of the Prefect server (19: it takes only the CPU the runs leave, as on a host of its own)",
    )
    parser.add_argument("--child", choices=["direct", "flow"])
    parser.add_argument("--home", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.dataset, args.home)
        return
    if not (args.dataset / "corpus.jsonl").is_file():
        print(f"{args.dataset} not found: this benchmark needs the shared Cranfield dataset; nothing measured")
        return

    with tempfile.TemporaryDirectory() as prefect_home:
        server, url = start_server(Path(prefect_home), args.server_nice)
        try:
            base = {k: v for k, v in os.environ.items() if not k.startswith(("RAGLINE_", "PREFECT_API"))}
            base.update(
                HF_HUB_OFFLINE="1",
                PREFECT_SERVER_ANALYTICS_ENABLED="false",
                PREFECT_HOME=prefect_home,
            )
            runs: dict[str, list[dict[str, object]]] = {"direct": [], "flow": []}
            for round_ in range(args.rounds):
                for kind in ("direct", "flow") if round_ % 2 == 0 else ("flow", "direct"):
                    env = {**base, "PREFECT_API_URL": url} if kind == "flow" else base
                    server_cpu = tree_cpu_seconds(server.pid)
                    runs[kind].append(measure(kind, args.dataset, args.models_dir, env))
                    runs[kind][-1]["server_cpu"] = tree_cpu_seconds(server.pid) - server_cpu
                    last = runs[kind][-1]
                    print(
                        f"round {round_ + 1} {kind}: {last['seconds']:.2f} s, cpu {last['cpu']:.2f} s",
                        flush=True,
                    )
        finally:
            server.terminate()
            server.wait(30)

    if runs["direct"][0]["stats"] != runs["flow"][0]["stats"]:
        raise SystemExit("the two paths counted different work")
    direct = statistics.median(float(r["seconds"]) for r in runs["direct"])  # type: ignore[arg-type]
    flow = statistics.median(float(r["seconds"]) for r in runs["flow"])  # type: ignore[arg-type]
    # CPU: the run's own process (every thread) and, for the flow, all the Prefect server did meanwhile; the server's
    # idle work during direct runs is not counted against them, so the CPU overhead is an upper bound
    direct_cpu = statistics.median(float(r["cpu"]) for r in runs["direct"])  # type: ignore[arg-type]
    flow_cpu = statistics.median(float(r["cpu"]) + float(r["server_cpu"]) for r in runs["flow"])  # type: ignore[arg-type]
    stats = runs["direct"][0]["stats"]
    paired = statistics.median(
        float(f["seconds"]) / float(d["seconds"]) - 1  # type: ignore[arg-type]
        for d, f in zip(runs["direct"], runs["flow"], strict=True)
    )
    result = {
        "dataset": str(args.dataset.name),
        "rounds": args.rounds,
        "server_nice": args.server_nice,
        "direct_seconds": [round(float(r["seconds"]), 3) for r in runs["direct"]],  # type: ignore[arg-type]
        "flow_seconds": [round(float(r["seconds"]), 3) for r in runs["flow"]],  # type: ignore[arg-type]
        "direct_median_s": round(direct, 3),
        "flow_median_s": round(flow, 3),
        "overhead": round(paired, 4),
        "overhead_of_medians": round(flow / direct - 1, 4),
        "direct_cpu_seconds": [round(float(r["cpu"]), 3) for r in runs["direct"]],  # type: ignore[arg-type]
        "flow_cpu_seconds": [round(float(r["cpu"]), 3) for r in runs["flow"]],  # type: ignore[arg-type]
        "flow_server_cpu_seconds": [round(float(r["server_cpu"]), 3) for r in runs["flow"]],  # type: ignore[arg-type]
        "direct_median_cpu_s": round(direct_cpu, 3),
        "flow_median_cpu_s": round(flow_cpu, 3),
        "cpu_overhead": round(flow_cpu / direct_cpu - 1, 4),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "chunks_written": stats["chunks_written"],  # type: ignore[index]
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
    }
    path = RESULTS.with_name(f"flow_overhead_server_nice{args.server_nice}.json") if args.server_nice else RESULTS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
