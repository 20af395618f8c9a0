"""One batch of `compare.py`: times one SDK's path against a running `wrenn up` and prints the
timings as JSON on stdout. Run with the SDK's own Python:

    python worker.py e2b|wrenn CREATES RUNS

`e2b`: the published e2b SDK in normal mode (E2B_API_KEY, E2B_API_URL, E2B_DOMAIN,
E2B_SANDBOX_URL set by the driver: header routing through Wrenn's port proxy).
`wrenn`: the published wrenn SDK (WRENN_BASE_URL, WRENN_API_KEY).

Each batch first makes, uses and drops one sandbox untimed (imports, connections), then times
CREATES rounds of create → first `true` (the sandbox dropped after each, untimed) and RUNS
`commands.run("true")` round trips in one sandbox.

The two SDKs start a command differently: e2b runs `/bin/bash -l -c CMD` (a login shell, which
reads the profile: about 150 ms more than `/bin/sh` under TCG), wrenn runs `/bin/sh -c CMD`. So
the wrenn path runs the same login shell (`exec /bin/bash -l -c true`), and the ratio is the
paths' own cost, not the shells'."""

import json
import sys
import time


def sdk(mode):
    if mode == "e2b":
        from e2b import Sandbox

        return (
            lambda: Sandbox.create(template="minimal", timeout=300),
            lambda s: s.commands.run("true"),
            lambda s: s.kill(),
        )
    from wrenn import Capsule

    return (
        lambda: Capsule(template="minimal", wait=True),
        lambda c: c.commands.run("exec /bin/bash -l -c true"),
        lambda c: c.destroy(wait=True),
    )


def main():
    mode, creates, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    create, run, drop = sdk(mode)

    def checked(s):
        r = run(s)
        if r.exit_code != 0:
            raise SystemExit(f"{mode}: `true` exited {r.exit_code}")

    s = create()
    checked(s)
    drop(s)
    first = []
    for _ in range(creates):
        t0 = time.perf_counter()
        s = create()
        checked(s)
        first.append((time.perf_counter() - t0) * 1000)
        drop(s)
    s = create()
    try:
        for _ in range(5):
            checked(s)
        rtt = []
        for _ in range(runs):
            t0 = time.perf_counter()
            checked(s)
            rtt.append((time.perf_counter() - t0) * 1000)
    finally:
        drop(s)
    json.dump({"create_first_ms": first, "run_true_ms": rtt}, sys.stdout)


if __name__ == "__main__":
    main()
