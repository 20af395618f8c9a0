"""capsules.metrics/stats/usage and the SSE event stream (events.stream)."""

import datetime as dt
import queue
import threading
import time

import pytest

from wrenn import WrennClient
from wrenn.models import CapsuleMetrics, CapsuleStats, Status, UsageResponse

import sdkutil


def test_metrics_has_points(mod_capsule, client):
    cid = mod_capsule.capsule_id
    # Give the sampler something to see.
    mod_capsule.commands.run("i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done")

    def points():
        m = client.capsules.metrics(cid)
        return m if m.points else None

    m = sdkutil.wait_until(points, timeout=15, interval=0.5, what="metric points")
    assert isinstance(m, CapsuleMetrics)
    assert m.sandbox_id in (None, cid)
    now = time.time()
    for p in m.points:
        assert p.timestamp_unix is not None and abs(p.timestamp_unix - now) < 900, p
        assert p.cpu_pct is None or p.cpu_pct >= 0, p
        assert p.mem_bytes is None or p.mem_bytes >= 0, p
    assert any((p.mem_bytes or 0) > 0 for p in m.points), m.points[-5:]
    stamps = [p.timestamp_unix for p in m.points]
    assert stamps == sorted(stamps), "points should be in time order"

    for rng in ("10m", "2h", "24h"):
        mr = client.capsules.metrics(cid, range=rng)
        assert isinstance(mr, CapsuleMetrics)
        assert mr.range is None or mr.range == rng


def test_stats_counts_running_capsules(mod_capsule, client):
    s = client.capsules.stats()
    assert isinstance(s, CapsuleStats)
    assert s.current is not None
    assert s.current.running_count >= 1
    assert s.current.vcpus_reserved >= 1
    assert s.current.memory_mb_reserved >= 128
    s5 = client.capsules.stats(range="5m")
    assert s5.range is None or s5.range == "5m"


def test_usage(mod_capsule, client):
    today = dt.date.today()
    u = client.capsules.usage(from_=today - dt.timedelta(days=7), to=today)
    assert isinstance(u, UsageResponse)
    assert u.points is None or isinstance(u.points, list)
    for p in u.points or []:
        assert p.date is None or today - dt.timedelta(days=8) <= p.date <= today + dt.timedelta(days=1)
    assert isinstance(client.capsules.usage(), UsageResponse)


class _EventPump:
    """Reads ``events.stream()`` on a thread into a queue.

    The iterator blocks without a timeout, so the test waits on the queue. The pump
    stops after the event ``until`` accepts.
    """

    def __init__(self, client: WrennClient, until):
        self.q = queue.Queue()
        self._until = until
        self._client = client
        self.thread = threading.Thread(target=self._run, name="sse-pump", daemon=True)
        self.thread.start()

    def _run(self):
        gen = self._client.events.stream()
        try:
            for ev in gen:
                self.q.put(ev)
                if self._until(ev):
                    break
        except Exception as e:
            self.q.put(e)
        finally:
            gen.close()
            self.q.put(None)

    def next(self, timeout: float, what: str = "event"):
        try:
            item = self.q.get(timeout=max(timeout, 0.001))
        except queue.Empty:
            pytest.fail(f"no {what} within {timeout:.0f}s")
        if isinstance(item, Exception):
            raise item
        if item is None:
            pytest.fail(f"the event stream ended before {what}")
        return item

    def wait_for(self, pred, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                ev = self.next(left, what)
            except pytest.fail.Exception as e:
                pytest.fail(f"{e}; events seen meanwhile: {seen}")
            seen.append(ev.event.value if ev.event else None)
            if pred(ev):
                return ev
        pytest.fail(f"no {what} within {timeout:.0f}s; events seen meanwhile: {seen}")


def _about(ev, cid):
    return (ev.resource is not None and ev.resource.id == cid) or (
        ev.sandbox is not None and ev.sandbox.id == cid
    )


@pytest.mark.deadline(120)
def test_events_stream_sees_create_and_destroy(server):
    made = {}

    def last_event(ev):
        cid = made.get("id")
        return cid is not None and ev.event == "capsule.destroy" and _about(ev, cid)

    with WrennClient(api_key=server.api_key, base_url=server.url) as sse_client, \
            WrennClient(api_key=server.api_key, base_url=server.url) as actor:
        pump = _EventPump(sse_client, last_event)
        first = pump.next(timeout=15)
        assert first.event == "connected", first

        # Create from another thread while the stream is open.
        def create():
            made["id"] = actor.capsules.create(template="minimal").id

        t = threading.Thread(target=create, daemon=True)
        t.start()
        t.join(60)
        assert "id" in made, "create did not return within 60s"
        cid = made["id"]
        try:
            ev = pump.wait_for(
                lambda e: e.event == "capsule.create" and _about(e, cid),
                timeout=30,
                what=f"capsule.create for {cid}",
            )
            assert ev.outcome is None or ev.outcome == "success"
            assert ev.timestamp is None or ev.timestamp.tzinfo is not None
            sdkutil.wait_until(
                lambda: actor.capsules.get(cid).status == Status.running,
                timeout=60,
                what=f"{cid} to be running",
            )
        finally:
            actor.capsules.destroy(cid)
        pump.wait_for(
            lambda e: e.event == "capsule.destroy" and _about(e, cid),
            timeout=30,
            what=f"capsule.destroy for {cid}",
        )
        pump.thread.join(10)
        assert not pump.thread.is_alive(), "the SSE reader did not stop"


def test_events_stream_bad_key(server):
    from wrenn import WrennAuthenticationError

    with WrennClient(api_key="wrn_" + "f" * 32, base_url=server.url) as bad:
        with pytest.raises(WrennAuthenticationError) as ei:
            next(iter(bad.events.stream()))
        assert ei.value.status_code == 401
