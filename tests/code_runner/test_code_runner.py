"""The published SDK's `wrenn.code_runner.Capsule` (0.3.0, unchanged) on `code-runner-beta`."""

import base64
import os

import httpx
import pytest

from wrenn import WrennClient
from wrenn.code_runner import Capsule

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def capsule(server):
    c = Capsule(wait=True)
    try:
        yield c
    finally:
        c.destroy()


def _kernels(c: Capsule) -> list:
    """GET /api/kernels of the capsule's Jupyter, through the port proxy (HTTP)."""
    url = c.get_url(8888)
    r = httpx.get(url + "/api/kernels", headers={"X-API-Key": os.environ["WRENN_API_KEY"]})
    assert r.status_code == 200, r.text
    return r.json()


def test_template_is_a_snapshot(server):
    # Built with a started server and a healthcheck: memory and processes captured.
    with WrennClient() as client:
        names = {t.name: t for t in client.snapshots.list()}
    assert "code-runner-beta" in names, sorted(names)
    assert str(getattr(names["code-runner-beta"].type, "value", "")) == "snapshot"


def test_first_run_code_uses_the_warm_kernel(capsule):
    # The snapshot holds the running server and an idle `wrenn` kernel: a fresh capsule lists
    # it before any run_code, and the first run_code runs there (no kernel started).
    before = _kernels(capsule)
    warm = [k for k in before if k["name"] == "wrenn"]
    assert len(warm) == 1, before
    assert warm[0]["execution_state"] == "idle", warm
    ex = capsule.run_code("6 * 7", jupyter_timeout=5)
    assert ex.error is None, ex.error
    assert ex.text == "42"
    assert capsule._kernel_id == warm[0]["id"]
    assert [k["id"] for k in _kernels(capsule)] == [warm[0]["id"]]


def test_state_persists_across_calls(capsule):
    assert capsule.run_code("import math\nx = 40").error is None
    assert capsule.run_code("def f(y):\n    return x + y").error is None
    ex = capsule.run_code("f(2), math.sqrt(16)")
    assert ex.text == "(42, 4.0)"
    assert ex.execution_count == 3


def test_stdout_and_stderr_stream_through_callbacks(capsule):
    # The cell prints, then waits for a file that only the on_stdout callback writes (through the
    # files API): it can finish only if "first" reached the callback while it was running.
    out, err = [], []

    def on_stdout(text):
        out.append(text)
        if "first" in text and not capsule.files.exists("/tmp/go"):
            capsule.files.write("/tmp/go", "go")

    code = (
        "import os, sys, time\n"
        "print('first', flush=True)\n"
        "while not os.path.exists('/tmp/go'):\n"
        "    time.sleep(0.05)\n"
        "print('second')\n"
        "print('oops', file=sys.stderr)\n"
    )
    ex = capsule.run_code(code, timeout=60, on_stdout=on_stdout, on_stderr=err.append)
    assert ex.error is None, ex.error
    assert "".join(out) == "first\nsecond\n"
    assert "".join(err) == "oops\n"
    assert ex.logs.stdout == out and ex.logs.stderr == err


def test_rich_results_text_and_png(capsule):
    seen = []
    code = (
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3], [1, 4, 9])\n"
        "plt.show()\n"
        "{'answer': 42}\n"
    )
    ex = capsule.run_code(code, timeout=120, on_result=seen.append)
    assert ex.error is None, ex.error
    pngs = [r for r in ex.results if r.png]
    assert len(pngs) == 1, [r.formats() for r in ex.results]
    assert not pngs[0].is_main_result
    data = base64.b64decode(pngs[0].png)
    assert data.startswith(PNG_MAGIC) and len(data) > 1000
    main = [r for r in ex.results if r.is_main_result]
    assert len(main) == 1 and main[0].text == "{'answer': 42}"
    assert seen == ex.results


def test_exception_is_reported_as_error(capsule):
    errors = []
    ex = capsule.run_code(
        "def g():\n    raise ValueError('no such thing')\ng()", on_error=errors.append
    )
    assert ex.error is not None
    assert ex.error.name == "ValueError"
    assert ex.error.value == "no such thing"
    assert "ValueError" in ex.error.traceback and "g()" in ex.error.traceback
    assert errors == [ex.error]
    assert ex.results == []
    # The kernel lives on after the error.
    assert capsule.run_code("1 + 1").text == "2"
