"""The retrain alert end to end: a real Prefect server, the automation of `flows.alerts`, a webhook receiver.

What `make deploy ALERT_WEBHOOK=...` sets up, checked the way a team would notice it: a local HTTP receiver on
127.0.0.1 stands for the team's webhook, `ensure_retrain_alert` saves the webhook block and creates the
automation, and two real `retrain-and-eval` runs (in this process, reporting to the server) end badly: one
fails (its mix config does not exist), one judges its candidate and rejects it (configs/deploy/tiny-*.yaml on
a fifth of the tiny mix's images, 100, with a cap on the mean NME that no candidate meets). The server must
POST one notification per run, naming the run and its final state; the wait for them is bounded (polled, up
to 90 s).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import State

from flows.alerts import AUTOMATION, ensure_retrain_alert
from flows.retrain_and_eval import retrain_and_eval_flow

ROOT = Path(__file__).resolve().parents[1]
WAIT_SECONDS = 90.0


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    """A JSON receiver on 127.0.0.1 in a thread; yields its URL and the list the bodies it received go into."""
    received: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/r3fa-alert", received
    server.shutdown()
    server.server_close()


@pytest.fixture
def prefect_api(prefect_services: dict[str, str]) -> Iterator[None]:
    """This process talks to the test server; the alert automation is removed afterwards."""
    with temporary_settings({PREFECT_API_URL: prefect_services["PREFECT_API_URL"]}):
        yield
        with get_client(sync_client=True) as client:
            for automation in client.read_automations_by_name(AUTOMATION):
                client.delete_automation(automation.id)


def run_name(state: State) -> str:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id).name


def wait_for(received: list[dict], count: int) -> list[dict]:
    """The first `count` bodies, waiting up to `WAIT_SECONDS` for them (whatever arrived when time is up)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while len(received) < count and time.monotonic() < deadline:
        time.sleep(0.5)
    return list(received)


@pytest.mark.slow
def test_failed_and_rejected_retrain_runs_are_notified(
    prefect_api: None, webhook: tuple[str, list[dict]], tmp_path: Path
) -> None:
    url, received = webhook
    mix = yaml.safe_load((ROOT / "configs" / "deploy" / "tiny-mix.yaml").read_text())
    mix["sources"][0].update(fold=0, n_folds=20)  # 100 images; the evaluation's fold 1 of 20 is disjoint
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(mix))
    assert AUTOMATION in ensure_retrain_alert(url)
    failed = retrain_and_eval_flow(mix=str(tmp_path / "missing.yaml"), out_dir=str(tmp_path), return_state=True)
    rejected = retrain_and_eval_flow(
        mix=str(tmp_path / "mix.yaml"),
        train=str(ROOT / "configs" / "deploy" / "tiny-train.yaml"),
        out_dir=str(tmp_path),
        registry=str(tmp_path / "registry.json"),
        eval_fold=1,
        n_folds=20,
        build_workers=0,
        max_mean_nme=1.0,  # percent: the tiny candidate (~23 %) cannot meet it
        return_state=True,
    )
    assert failed.is_failed(), failed
    assert rejected.is_completed() and rejected.name == "Rejected", rejected
    registry = json.loads((tmp_path / "registry.json").read_text())
    assert registry["promoted"] is None and registry["history"][-1]["decision"] == "rejected"

    bodies = wait_for(received, 2)
    by_subject = {body["subject"]: body for body in bodies}
    for state, ended in ((failed, "Failed"), (rejected, "Rejected")):
        subject = f"r3fa: retrain run {run_name(state)} ended {ended}"
        assert subject in by_subject, f"no notification {subject!r} within {WAIT_SECONDS:.0f} s; got {bodies}"
        body = by_subject[subject]["body"]
        assert str(state.state_details.flow_run_id) in body and (state.message or "") in body
    assert len(bodies) == 2, bodies
