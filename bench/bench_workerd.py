"""A Worker reading one hot key: its KV binding served by pullkv, against Miniflare's local KV.

The Worker (``workerd/kv-hot.js``) answers every request with ``await env.KV.get("hot")``, a
1 KiB value. It runs:

- in workerd with the binding served by a ``pullkv edge`` in front of a ``pullkv origin``
  (the deployment story: each workerd talks to the edge of its own location);
- in workerd with the binding served by ``pullkv serve`` (one process; skip: --no-serve);
- under Miniflare 4 with Miniflare's own local KV namespace (``workerd/miniflare-kv.mjs``:
  ``new Miniflare({modules: true, script, kvNamespaces: ["KV"], host, port})``, "hot" seeded
  through ``getKVNamespace("KV")``, request logging off);
- as a reference, in workerd without any KV call, answering the same 1 KiB from a constant
  (what workerd itself costs; skip: --no-baseline).

workerd reaches pullkv as an external service with ``injectRequestHeaders`` for
``Authorization`` (the origin's admin token) and ``X-PullKV-Namespace``, as
tests/compat/test_workerd.py configures it. Every target is checked to return the value
before anything is measured, then ``wrk -t1 -c64 --latency`` reads each in interleaved
rounds: median req/s, p99 and the ratio of pullkv to Miniflare (target: at least 1x). By
default every server process (workerd, pullkv, Node and Miniflare's workerd) runs on CPU 0 and
wrk on CPU 1, so each stack under test gets the same single core.

    .venv/bin/python bench/bench_workerd.py --duration 10 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from benchlib import (
    HERE,
    HOST,
    PullkvServer,
    Run,
    WrkResult,
    add_common_arguments,
    add_pin_arguments,
    check_common_arguments,
    check_cpus,
    default_server_command,
    find_tool,
    free_port,
    interleaved_rounds,
    kept_results,
    machine_facts,
    median,
    paired_ratios,
    pin,
    rounds_table,
    run_wrk,
    stop_process,
    summary_table,
    tool_version,
    wait_for_port,
)

ROOT = HERE.parent
WORKER = HERE / "workerd" / "kv-hot.js"
MINIFLARE_DRIVER = HERE / "workerd" / "miniflare-kv.mjs"
VALUE_BYTES = 1024
EDGE = "workerd -> pullkv edge"
SERVE = "workerd -> pullkv serve"
MINIFLARE = "Miniflare, local KV"
BASELINE = "workerd, no KV call"
TARGET_RATIO = 1.0  # pullkv's req/s over Miniflare's

CONFIG = """using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "main", worker = .hot),{external}
  ],
  sockets = [(name = "http", address = "{host}:{port}", http = (), service = "main")],
);

const hot :Workerd.Worker = (
  modules = [(name = "worker", esModule = embed "worker.js")],
  compatibilityDate = "2025-01-01",
  bindings = [{bindings}],
);
"""

EXTERNAL = """
    (name = "pullkv", external = (
      address = "{host}:{port}",
      http = (injectRequestHeaders = [
        (name = "Authorization", value = "Bearer {token}"),
        (name = "X-PullKV-Namespace", value = "{namespace}"),
      ]),
    )),"""

CONSTANT_WORKER = """// The reference Worker: the same 1 KiB answer, without a KV call.
const VALUE = {value};
export default {{
  async fetch() {{
    return new Response(VALUE);
  }},
}};
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_common_arguments(p, connections=64, per="target")
    add_pin_arguments(p)
    p.add_argument("--no-serve", action="store_true", help="skip workerd -> pullkv serve")
    p.add_argument("--no-baseline", action="store_true", help="skip workerd without KV")
    p.add_argument(
        "--workerd",
        default=str(ROOT / "node_modules" / ".bin" / "workerd"),
        help="path of workerd (default: node_modules/.bin/workerd)",
    )
    p.add_argument("--node", help="path of node (default: from PATH)")
    args = p.parse_args(argv)
    check_common_arguments(p, args)
    check_cpus(p, args.server_cpus, args.wrk_cpus)
    if not Path(args.workerd).exists():
        p.error(f"{args.workerd} not found: run npm ci (or ./dev setup)")
    if not (ROOT / "node_modules" / "miniflare").is_dir():
        p.error("node_modules/miniflare not found: run npm ci (or ./dev setup)")
    return args


class Workerd:
    """``workerd serve`` of one Worker on a free loopback port, from a temporary folder;
    ``binding`` (port, token, namespace id) makes a pullkv node its ``KV`` binding."""

    def __init__(
        self,
        workerd: str,
        worker_source: str,
        binding: tuple[int, str, str] | None,
        wrapper: list[str],
        label: str,
    ) -> None:
        self.workerd = workerd
        self.wrapper = wrapper
        self.tmp = Path(tempfile.mkdtemp(prefix=f"pullkv-bench-workerd-{label}-"))
        (self.tmp / "worker.js").write_text(worker_source)
        self.binding = binding
        self.log = self.tmp / "workerd.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The Worker's URL."""
        return f"http://{HOST}:{self.port}/"

    @property
    def pid(self) -> int:
        """workerd's process id."""
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> Workerd:
        try:
            for _attempt in range(3):  # another process may take the free port first
                self.port = free_port()
                self._write_config()
                with self.log.open("wb") as log:
                    self.proc = subprocess.Popen(
                        [*self.wrapper, self.workerd, "serve", "config.capnp"],
                        cwd=self.tmp,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
                try:
                    wait_for_port(self.port, self.proc, 30, self.log)
                    return self
                except RuntimeError:
                    if "in use" not in self.log.read_text():
                        raise
                    stop_process(self.proc)
            raise RuntimeError(f"workerd could not bind a port:\n{self.log.read_text()}")
        except BaseException:
            self.close()
            raise

    def _write_config(self) -> None:
        external, bindings = "", ""
        if self.binding is not None:
            port, token, namespace = self.binding
            external = EXTERNAL.format(host=HOST, port=port, token=token, namespace=namespace)
            bindings = '(name = "KV", kvNamespace = "pullkv")'
        config = CONFIG.format(host=HOST, port=self.port, external=external, bindings=bindings)
        (self.tmp / "config.capnp").write_text(config)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop workerd by its pid and remove the folder."""
        if self.proc is not None:
            stop_process(self.proc, grace=10)
        shutil.rmtree(self.tmp, ignore_errors=True)


class MiniflareServer:
    """The Worker under Miniflare 4 with a local KV namespace (workerd/miniflare-kv.mjs)."""

    def __init__(self, node: str, value: bytes, wrapper: list[str]) -> None:
        self.node = node
        self.wrapper = wrapper
        self.tmp = Path(tempfile.mkdtemp(prefix="pullkv-bench-miniflare-"))
        (self.tmp / "hot").write_bytes(value)
        self.log = self.tmp / "miniflare.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.children: list[int] = []  # Miniflare's workerd, stopped by pid if Node leaves it

    @property
    def url(self) -> str:
        """The Worker's URL."""
        return f"http://{HOST}:{self.port}/"

    @property
    def pid(self) -> int:
        """Node's process id (its workerd child's CPU time counts with it)."""
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> MiniflareServer:
        try:
            self.port = free_port()
            args = [*self.wrapper, self.node, str(MINIFLARE_DRIVER), str(self.port)]
            args += [str(WORKER), str(self.tmp / "hot")]
            with self.log.open("wb") as log:
                self.proc = subprocess.Popen(
                    args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            deadline = time.monotonic() + 60
            while "READY " not in self.log.read_text():
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Miniflare did not start:\n{self.log.read_text()}")
                time.sleep(0.1)
            self.children = _children(self.proc.pid)
            return self
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop Node (SIGTERM: Miniflare disposes of its workerd), then any child it left."""
        if self.proc is not None:
            stop_process(self.proc, grace=15)
        for pid in self.children:
            _stop_pid(pid)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _children(pid: int) -> list[int]:
    """The live child process ids of ``pid`` (all of its threads')."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _stop_pid(pid: int, grace: float = 5) -> None:
    """SIGTERM, then SIGKILL, one process we did not spawn directly (our child's child)."""
    deadline = time.monotonic() + grace
    sig = signal.SIGTERM
    while Path(f"/proc/{pid}").exists():
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        if state == "Z":
            return  # exited; its parent reaps it
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            sig = signal.SIGKILL
        time.sleep(0.1)


def fetch(url: str) -> tuple[int, bytes]:
    """One GET: status and body."""
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the report."""
    args = parse_args(argv)
    wrk = find_tool("wrk", args.wrk)
    node = find_tool("node", args.node)
    base_command = shlex.split(args.server) if args.server else default_server_command()
    server_pin, wrk_pin = pin(args.server_cpus), pin(args.wrk_cpus)
    server_command = [*server_pin, *base_command]
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "bench/bench_workerd.py", *given])
    miniflare_version = json.loads((ROOT / "node_modules/miniflare/package.json").read_text())
    facts = machine_facts(wrk, base_command, source=args.source)
    facts = [f for f in facts if not f.startswith("4 KiB write")]  # no durable writes here
    facts += [
        f"node: {tool_version([node, '--version'])}",
        f"workerd: {tool_version([args.workerd, '--version'])} (node_modules/.bin/workerd)",
        f"miniflare: {miniflare_version['version']} (node_modules/miniflare)",
    ]
    value = bytes(ord("a") + i % 26 for i in range(VALUE_BYTES))
    worker_source = WORKER.read_text()
    constant_source = CONSTANT_WORKER.format(value=json.dumps(value.decode()))

    runs: list[Run] = []
    hot_check: dict[str, float] = {}
    with (
        PullkvServer(server_command, [], "origin", role="origin") as origin,
        PullkvServer(server_command, [], "edge", role="edge", upstream=origin) as edge,
        PullkvServer(server_command, [], "serve") as serve,
    ):
        ns_origin = origin.create_namespace("bench-workerd")
        origin.put(ns_origin, "hot", value)
        ns_serve = serve.create_namespace("bench-workerd")
        serve.put(ns_serve, "hot", value)
        with (
            Workerd(
                args.workerd,
                worker_source,
                (edge.port, edge.token, ns_origin),
                server_pin,
                "edge",
            ) as wd_edge,
            Workerd(
                args.workerd,
                worker_source,
                (serve.port, serve.token, ns_serve),
                server_pin,
                "serve",
            ) as wd_serve,
            Workerd(args.workerd, constant_source, None, server_pin, "baseline") as wd_base,
            MiniflareServer(node, value, server_pin) as mf,
        ):
            # target -> (url, pids whose CPU counts as the server's, pullkv node to check)
            targets: dict[str, tuple[str, list[int], PullkvServer | None]] = {
                EDGE: (wd_edge.url, [wd_edge.pid, edge.pid, origin.pid], edge),
                MINIFLARE: (mf.url, [mf.pid], None),
            }
            if not args.no_serve:
                targets[SERVE] = (wd_serve.url, [wd_serve.pid, serve.pid], serve)
            if not args.no_baseline:
                targets[BASELINE] = (wd_base.url, [wd_base.pid], None)
            for name, (url, _pids, node_checked) in targets.items():
                for _ in range(3):  # the first fills the pullkv cache and token cache
                    status, body = fetch(url)
                    if status != 200 or body != value:
                        raise RuntimeError(f"{name}: {status} {body[:200]!r}")
                if node_checked is not None:
                    before = node_checked.metric("pullkv_hot_responses_total")
                    for _ in range(5):
                        fetch(url)
                    after = node_checked.metric("pullkv_hot_responses_total")
                    hot_check[name] = (after - before) / 5
            print(
                f"checked: every target answers the 1 KiB value; hot path {hot_check};"
                f" Miniflare's workerd: pids {mf.children}",
                file=sys.stderr,
                flush=True,
            )

            def once(name: str, seconds: float) -> WrkResult:
                url, pids, node_checked = targets[name]
                before = node_checked.metric("pullkv_hot_responses_total") if node_checked else 0
                result = run_wrk(
                    wrk,
                    url,
                    HERE / "get_static.lua",
                    [""],
                    threads=args.threads,
                    connections=args.connections,
                    duration=seconds,
                    server_pids=pids,
                    wrapper=wrk_pin,
                )
                if node_checked is not None:
                    hot = node_checked.metric("pullkv_hot_responses_total") - before
                    result.extra["hot"] = 100 * hot / max(1, result.requests)
                return result

            runs = interleaved_rounds(
                list(targets),
                once,
                rounds=args.rounds,
                duration=args.duration,
                warmup=args.warmup,
                quiet_wait=args.quiet_wait,
                max_noise=args.max_noise,
                retries=args.retries,
            )

    print(report(args, command, facts, hot_check, runs))
    return 0


def report(
    args: argparse.Namespace,
    command: str,
    facts: list[str],
    hot_check: dict[str, float],
    runs: list[Run],
) -> str:
    """The markdown report."""
    pinning = (
        f"every server process (workerd, pullkv, Node and Miniflare's workerd) on CPU"
        f" {args.server_cpus} (taskset -c {args.server_cpus}), wrk on CPU {args.wrk_cpus}"
        if args.server_cpus or args.wrk_cpus
        else "none (the scheduler's choice)"
    )
    hot_col = [("hot %", "hot", ".1f")]
    out = [
        "### workerd: a Worker's `env.KV.get` served by pullkv, against Miniflare's local KV",
        "",
        f"Command: `{command}`",
        "",
        *[f"- {fact}" for fact in facts],
        '- Worker: `bench/workerd/kv-hot.js`, answers `await env.KV.get("hot")` (1 KiB)',
        "- pullkv side: workerd's `kvNamespace` binding is an external service with"
        " `injectRequestHeaders` (Authorization, X-PullKV-Namespace); *edge*: a `pullkv edge`"
        " in front of a `pullkv origin`; *serve*: one `pullkv serve`",
        '- Miniflare side: `new Miniflare({modules: true, script, kvNamespaces: ["KV"],'
        ' host, port, logRequests: false})`, `hot` seeded with `getKVNamespace("KV")`\'s'
        " put (bench/workerd/miniflare-kv.mjs)",
        f"- pinning: {pinning}",
        f"- load generator: wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s"
        " --latency, GET / (bench/get_static.lua)",
        "- fast-path check before measuring: "
        + ", ".join(
            f"{name}: {share:.0%} of 5 Worker requests" for name, share in hot_check.items()
        )
        + " counted by the pullkv node's `pullkv_hot_responses_total`",
        "",
        summary_table(runs, hot_col),
        "",
    ]
    verdicts = []
    mf_rate = median([r.rate for r in kept_results(runs, MINIFLARE)])
    for name in (EDGE, SERVE):
        if not kept_results(runs, name):
            continue
        rate = median([r.rate for r in kept_results(runs, name)])
        per_round = " / ".join(f"{r:.2f}x" for r in paired_ratios(runs, name, MINIFLARE))
        ok = rate / mf_rate >= TARGET_RATIO
        out.append(
            f"Ratio {name} / Miniflare: **{rate / mf_rate:.2f}x** of the medians;"
            f" {per_round} round by round."
        )
        verdicts.append(
            f"{name}: {rate / mf_rate:.2f}x Miniflare, target >= {TARGET_RATIO:g}x:"
            f" **{'PASS' if ok else 'FAIL'}**"
        )
    if kept_results(runs, BASELINE):
        base = median([r.rate for r in kept_results(runs, BASELINE)])
        out.append(f"Ratio Miniflare / workerd without KV: **{mf_rate / base:.2f}x**.")
    for name in dict.fromkeys(r.target for r in runs):
        kinds: dict[str, int] = {}
        for result in kept_results(runs, name):
            for kind, count in result.error_kinds.items():
                kinds[kind] = kinds.get(kind, 0) + count
        if kinds:
            listed = ", ".join(f"{count} {kind}" for kind, count in kinds.items())
            out.append(f"Socket errors of {name} (kept rounds), by wrk's kind: {listed}.")
    out += [
        "",
        rounds_table(runs, args.max_noise, hot_col),
        "",
        "Against the target:",
        "",
        *[f"- {v}" for v in verdicts],
        "",
        "Server CPU: user+system time over the run of every process serving the target"
        " (workerd and the pullkv node(s); Node and its workerd child for Miniflare), in % of"
        " one core. hot %: responses counted by the pullkv node's"
        " `pullkv_hot_responses_total` over the requests wrk counted. Others' CPU: machine CPU"
        " time (user+system+steal) used by none of our processes over the run, in % of one"
        " core (other tenants); a round where it passed --max-noise was redone.",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
