"""Policy decision latency: aifr's compiled index vs cedarpy, pycasbin and a naive loop.

One workload, four engines, the same decisions: N rules (10, 100, 1000), each "principals
holding role R may invoke capabilities under namespace svcI.", plus one rule denying a
``blocked`` role everything. Requests pick a rule at random and a principal that holds its
role (ALLOW) or not (default DENY for HIGH risk). Every engine is checked to agree with
aifr on every sampled request before it is timed.

* aifr: ``PolicyEngine.decide`` (YAML compiled once), three ways. "warm" replays a
  working set of 2,000 distinct requests (memoized plans: repeat requests). "cold" forgets
  every memoized plan and principal before each call, so each decision is a first-seen
  (capability, principal) pair: roles resolved, rule list walked, plan built. "cold, new
  capability" also forgets the per-capability candidate lists, so each call starts from
  the load-time buckets alone. An aifr-only variant adds an input condition to every
  rule (``path`` under ``/srv/svcI``), with a path of its own on every request.
* cedarpy: ``is_authorized`` with a pre-parsed ``PolicySet`` and ``Entities``; namespaces
  are resource parents, roles principal parents.
* pycasbin: RBAC model with ``keyMatch`` on the capability id.
* naive: a Python first-match loop with ``fnmatch.fnmatchcase``.

Latency is timed per call with ``perf_counter_ns`` (timer overhead subtracted), in ten
rounds per row; the round with the lowest median is reported (as ``timeit`` reports the
best repeat), since the machine may be shared.
Results go to ``docs/benchmarks.md`` under ``## Policy decisions``.

    python -m benchmarks policy [--sizes 10 100 1000] [--calls 20000]
"""

from __future__ import annotations

import argparse
import fnmatch
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aifr.capabilities import CapabilitySpec, OperationType, Risk, RiskLevel
from aifr.policy import Decision, PolicyEngine, PolicyRequest, load_policy_text

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## Policy decisions"
ROLES = 50
PRINCIPALS = 200
WORKING_SET = 2000
ROUNDS = 10


def role_of(principal: int) -> str:
    return "blocked" if principal < 4 else f"role{principal % ROLES}"


class Workload:
    def __init__(self, size: int, seed: int = 7) -> None:
        self.size = size
        rng = random.Random(seed)
        self.specs = [
            CapabilitySpec(
                id=f"svc{i}.action",
                operation_type=OperationType.EXECUTE,
                risk=Risk(level=RiskLevel.HIGH),
            )
            for i in range(size)
        ]
        self.requests: list[tuple[int, int]] = []  # (principal, capability)
        for _ in range(WORKING_SET):
            cap = rng.randrange(size)
            if rng.random() < 0.5:
                candidates = [p for p in range(PRINCIPALS) if role_of(p) == f"role{cap % ROLES}"]
                principal = rng.choice(candidates) if candidates else rng.randrange(PRINCIPALS)
            else:
                principal = rng.randrange(PRINCIPALS)
            self.requests.append((principal, cap))

    def rules_yaml(self, inputs: bool = False) -> str:
        lines = ["version: 1", "roles:"]
        lines.append(
            "  blocked:\n    principals: [" + ", ".join(f"user{p}" for p in range(4)) + "]"
        )
        for r in range(ROLES):
            members = [f"user{p}" for p in range(PRINCIPALS) if role_of(p) == f"role{r}"]
            lines.append(f"  role{r}:\n    principals: [{', '.join(members)}]")
        lines.append("rules:")
        lines.append("  - id: deny-blocked\n    when: {roles: [blocked]}\n    decision: DENY")
        for i in range(self.size - 1):
            condition = f", inputs: {{path: {{under: /srv/svc{i}}}}}" if inputs else ""
            lines.append(
                f"  - id: r{i}\n    when: {{capability: 'svc{i}.*', roles: [role{i % ROLES}]"
                f"{condition}}}\n    decision: ALLOW"
            )
        return "\n".join(lines) + "\n"

    @staticmethod
    def path(k: int, cap: int) -> str:
        """The input of the k-th request in the input-condition workload (half allowed)."""
        return f"/srv/svc{cap if k % 2 == 0 else cap + 1}/data/f{k}.txt"

    def expected(self, principal: int, cap: int) -> bool:
        role = role_of(principal)
        return role != "blocked" and cap < self.size - 1 and role == f"role{cap % ROLES}"


def aifr_engine(
    w: Workload,
) -> tuple[Callable[[int, int], bool], Callable[[], None], Callable[[], None]]:
    engine = PolicyEngine(load_policy_text([("bench.yaml", w.rules_yaml())]))
    requests = {
        (p, c): PolicyRequest(principal=f"user{p}", capability=w.specs[c], inputs={})
        for p, c in w.requests
    }

    def decide(p: int, c: int) -> bool:
        return engine.decide(requests[(p, c)]).decision is Decision.ALLOW

    def first_seen_subject() -> None:
        engine.compiled.forget()

    def first_seen_capability() -> None:
        engine.compiled.forget(capabilities=True)

    return decide, first_seen_subject, first_seen_capability


def aifr_inputs_engine(
    w: Workload,
) -> tuple[Callable[[int, int], bool], Callable[[], None], list[tuple[int, int]]]:
    """The same rules, each also requiring ``inputs.path`` under ``/srv/svcI``.

    Every request comes from a principal holding the rule's role, so every decision tests
    its input; each request of the working set carries its own path, half of them outside.
    """
    engine = PolicyEngine(load_policy_text([("bench.yaml", w.rules_yaml(inputs=True))]))

    def holder(cap: int) -> int:
        role = cap % ROLES
        return role + ROLES if role_of(role) == "blocked" else role

    requests = [
        PolicyRequest(
            principal=f"user{holder(c)}",
            capability=w.specs[c],
            inputs={"path": Workload.path(k, c)},
        )
        for k, (_, c) in enumerate(w.requests)
    ]
    for k, (_, c) in enumerate(w.requests[:300]):
        allowed = engine.decide(requests[k]).decision is Decision.ALLOW
        assert allowed == (w.expected(holder(c), c) and k % 2 == 0), ("aifr inputs", w.size, k)

    def decide(k: int, _: int) -> bool:
        return engine.decide(requests[k]).decision is Decision.ALLOW

    def first_seen_subject() -> None:
        engine.compiled.forget()

    return decide, first_seen_subject, [(k, 0) for k in range(len(requests))]


def naive_engine(w: Workload) -> Callable[[int, int], bool]:
    rules = [("*", "blocked", False)]
    rules += [(f"svc{i}.*", f"role{i % ROLES}", True) for i in range(w.size - 1)]
    roles = {f"user{p}": {role_of(p)} for p in range(PRINCIPALS)}
    ids = [s.id for s in w.specs]

    def decide(p: int, c: int) -> bool:
        held = roles[f"user{p}"]
        cap = ids[c]
        for pattern, role, allow in rules:
            if role in held and fnmatch.fnmatchcase(cap, pattern):
                return allow
        return False

    return decide


def cedar_engine(w: Workload) -> Callable[[int, int], bool] | None:
    try:
        import cedarpy
    except ImportError:
        return None
    policies = ['forbid(principal in Role::"blocked", action, resource);']
    policies += [
        f'permit(principal in Role::"role{i % ROLES}", action == Action::"invoke", '
        f'resource in Namespace::"svc{i}");'
        for i in range(w.size - 1)
    ]
    entities: list[dict[str, Any]] = [
        {"uid": {"type": "Role", "id": r}, "attrs": {}, "parents": []}
        for r in ["blocked", *(f"role{i}" for i in range(ROLES))]
    ]
    entities += [
        {
            "uid": {"type": "User", "id": f"user{p}"},
            "attrs": {},
            "parents": [{"type": "Role", "id": role_of(p)}],
        }
        for p in range(PRINCIPALS)
    ]
    entities += [
        {"uid": {"type": "Namespace", "id": f"svc{i}"}, "attrs": {}, "parents": []}
        for i in range(w.size)
    ]
    entities += [
        {
            "uid": {"type": "Capability", "id": f"svc{i}.action"},
            "attrs": {},
            "parents": [{"type": "Namespace", "id": f"svc{i}"}],
        }
        for i in range(w.size)
    ]
    policy_set = cedarpy.PolicySet.from_str("\n".join(policies))
    store = cedarpy.Entities.from_json_str(json.dumps(entities))

    def decide(p: int, c: int) -> bool:
        request = {
            "principal": f'User::"user{p}"',
            "action": 'Action::"invoke"',
            "resource": f'Capability::"svc{c}.action"',
            "context": {},
        }
        return cedarpy.is_authorized(request, policy_set, store).decision == cedarpy.Decision.Allow

    return decide


CASBIN_MODEL = """
[request_definition]
r = sub, obj, act
[policy_definition]
p = sub, obj, act, eft
[role_definition]
g = _, _
[policy_effect]
e = some(where (p.eft == allow)) && !some(where (p.eft == deny))
[matchers]
m = g(r.sub, p.sub) && keyMatch(r.obj, p.obj) && r.act == p.act
"""


def casbin_engine(w: Workload) -> Callable[[int, int], bool] | None:
    try:
        import casbin
    except ImportError:
        return None
    model = casbin.Model()
    model.load_model_from_text(CASBIN_MODEL)
    enforcer = casbin.Enforcer(model)
    enforcer.add_policy("blocked", "*", "invoke", "deny")
    for i in range(w.size - 1):
        enforcer.add_policy(f"role{i % ROLES}", f"svc{i}.*", "invoke", "allow")
    for p in range(PRINCIPALS):
        enforcer.add_grouping_policy(f"user{p}", role_of(p))

    def decide(p: int, c: int) -> bool:
        return bool(enforcer.enforce(f"user{p}", f"svc{c}.action", "invoke"))

    return decide


def timer_overhead_ns() -> float:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(20000):
        t0 = clock()
        samples.append(clock() - t0)
    return statistics.median(samples)


def measure(
    decide: Callable[[int, int], bool],
    requests: list[tuple[int, int]],
    calls: int,
    overhead: float,
    before: Callable[[], None] | None = None,
    warmup: int = WORKING_SET,
) -> tuple[float, float]:
    """Median and p99 in microseconds of the best of ROUNDS rounds (lowest median)."""
    clock = time.perf_counter_ns
    for p, c in requests[: min(len(requests), warmup)]:
        decide(p, c)  # warm-up
    best: tuple[float, float] | None = None
    per_round = max(1, calls // ROUNDS)
    for _ in range(ROUNDS):
        samples = []
        gc.disable()
        try:
            for k in range(per_round):
                p, c = requests[k % len(requests)]
                if before is not None:
                    before()
                t0 = clock()
                decide(p, c)
                samples.append(clock() - t0 - overhead)
        finally:
            gc.enable()
        samples.sort()
        result = samples[len(samples) // 2] / 1000, samples[int(len(samples) * 0.99)] / 1000
        if best is None or result[0] < best[0]:
            best = result
    assert best is not None
    return best


def run(sizes: list[int], calls: int) -> list[dict[str, Any]]:
    overhead = timer_overhead_ns()
    rows = []
    for size in sizes:
        w = Workload(size)
        decide, new_subject, new_capability = aifr_engine(w)
        for p, c in w.requests[:300]:
            assert decide(p, c) == w.expected(p, c), ("aifr", size, p, c)
        # aifr first, before the peers' engines fill the heap.
        row: dict[str, Any] = {"size": size}
        row["aifr"] = measure(decide, w.requests, calls, overhead)
        cold_calls = max(2000, calls // 4)
        row["aifr_cold"] = measure(decide, w.requests, cold_calls, overhead, new_subject)
        row["aifr_new_cap"] = measure(decide, w.requests, cold_calls, overhead, new_capability)
        with_inputs, forget, numbered = aifr_inputs_engine(w)
        row["inputs_warm"] = measure(with_inputs, numbered, calls, overhead)
        row["inputs_cold"] = measure(with_inputs, numbered, cold_calls, overhead, forget)
        engines: dict[str, Callable[[int, int], bool] | None] = {
            "naive": naive_engine(w),
            "cedarpy": cedar_engine(w),
            "casbin": casbin_engine(w),
        }
        for name, other in engines.items():
            if other is None:
                continue
            for p, c in w.requests[:300]:
                assert other(p, c) == w.expected(p, c), (name, size, p, c)
        budget = {"naive": calls, "cedarpy": max(300, calls // 20), "casbin": max(200, calls // 50)}
        for name, engine in engines.items():
            row[name] = (
                measure(engine, w.requests, budget[name], overhead, warmup=50) if engine else None
            )
        rows.append(row)
        print(
            f"{size:>5} rules: "
            + ", ".join(
                f"{k} {v[0]:.2f}/{v[1]:.2f} us" for k, v in row.items() if k != "size" and v
            ),
            flush=True,
        )
    return rows


def versions() -> str:
    parts = []
    for name in ("cedarpy", "casbin"):
        try:
            from importlib.metadata import version

            parts.append(f"{name} {version(name)}")
        except Exception:
            parts.append(f"{name} not installed")
    return ", ".join(parts)


def write_docs(rows: list[dict[str, Any]], calls: int) -> None:
    def cell(value: tuple[float, float] | None) -> str:
        return "n/a" if value is None else f"{value[0]:.2f} ({value[1]:.2f})"

    def times(x: float) -> str:
        return f"{x:.1f}x" if x < 10 else f"{x:,.0f}x"

    def ratios(other: tuple[float, float] | None, row: dict[str, Any]) -> str:
        if other is None:
            return "n/a"
        return f"{times(other[0] / row['aifr'][0])} / {times(other[0] / row['aifr_cold'][0])}"

    first = rows[0]
    lines = [
        SECTION,
        "",
        f"`python -m benchmarks policy` ({calls} timed decisions per size for aifr warm and the "
        f"naive loop, {max(2000, calls // 4)} for each cold aifr row, fewer for the slower "
        f"peers); {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}, {versions()}, "
        f"{time.strftime('%Y-%m-%d')}. Median (p99) per decision in microseconds, from the "
        f"best of {ROUNDS} rounds (lowest median); ratios are medians, peer / aifr warm / "
        "aifr cold.",
        "",
        "| rules | aifr warm (repeat request) | aifr cold (first-seen principal) | aifr cold, "
        "new capability too | naive fnmatch loop | cedarpy (PolicySet) | pycasbin | "
        "naive / aifr | cedarpy / aifr | casbin / aifr | aifr vs 10 rules (warm / cold / "
        "new capability) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        flat = " / ".join(
            f"{r[k][0] / first[k][0]:.2f}x" for k in ("aifr", "aifr_cold", "aifr_new_cap")
        )
        lines.append(
            f"| {r['size']:,} | {cell(r['aifr'])} | {cell(r['aifr_cold'])} | "
            f"{cell(r['aifr_new_cap'])} | {cell(r['naive'])} | {cell(r['cedarpy'])} | "
            f"{cell(r['casbin'])} | {ratios(r['naive'], r)} | {ratios(r['cedarpy'], r)} | "
            f"{ratios(r['casbin'], r)} | {flat} |"
        )
    lines += [
        "",
        "The same rules with an input condition each (`inputs: {path: {under: /srv/svcI}}`), "
        "aifr only: every request comes from a principal holding the rule's role, so every "
        "decision tests its input, and every request of the working set carries its own path "
        "(half under its service's folder, half under the next one's):",
        "",
        "| rules | aifr warm | aifr cold (first-seen principal) | vs 10 rules (warm / cold) |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']:,} | {cell(r['inputs_warm'])} | {cell(r['inputs_cold'])} | "
            f"{r['inputs_warm'][0] / first['inputs_warm'][0]:.2f}x / "
            f"{r['inputs_cold'][0] / first['inputs_cold'][0]:.2f}x |"
        )
    lines += [
        "",
        'Workload: N-1 rules "role R may invoke `svcI.*`" after one rule denying a `blocked` '
        f"role, {ROLES} roles, {PRINCIPALS} principals, a working set of {WORKING_SET} distinct "
        "requests (half allowed); all engines agree on every checked request. `aifr warm` is "
        "`PolicyEngine.decide` answering from memoized plans (a repeat (capability, principal, "
        "roles, chain)). `aifr cold` forgets every plan and principal before each call "
        "(`CompiledPolicy.forget()`), so each decision is a first-seen request: roles are "
        "looked up in the RBAC table, the capability's candidate rules are walked with their "
        "compiled tests and the plan is built and stored. `new capability too` also forgets "
        "the per-capability candidate lists (`forget(capabilities=True)`), so each call also "
        "reads the spec's risk and operation and finds its bucket (exact id, else the "
        "longest `head*` prefix, built at load with the rules of shorter heads and the "
        "rules without a bucketable glob). Goal (issue 4), for warm and cold alike: median <= 3 us at 1,000 rules, "
        "at most 1.5x the 10-rule figure, p99 < 10 us. p99 on a shared 2-CPU machine "
        "includes preemption by other processes; what still grows with the rule count is "
        "the CPU cache, as 2,000 requests over 1,000 capabilities touch 1,000 rules' "
        "compiled objects (the same 1,000-rule policy decided for 10 capabilities runs at "
        "the 10-rule speed).",
        "",
    ]
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n\n"
    start = text.find(SECTION + "\n")
    block = "\n".join(lines) + "\n"
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + block
    else:
        end = text.find("\n## ", start + len(SECTION))
        before = text[:start] if text[:start].endswith("\n\n") else text[:start] + "\n"
        text = before + block + (text[end + 1 :] if end != -1 else "")
    DOCS.write_text(text)
    print(f"wrote {DOCS.relative_to(ROOT)} {SECTION}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args(sys.argv[2:] if sys.argv[1:2] == ["policy"] else sys.argv[1:])
    rows = run(args.sizes, args.calls)
    if not args.no_docs:
        write_docs(rows, args.calls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
