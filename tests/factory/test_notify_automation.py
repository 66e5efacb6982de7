"""``factory up`` with ``TALKFACTORY_NOTIFY_BLOCK``: an automation that sends failed recordings through
the user's notification block, on a real Prefect server, delivered to a real HTTP endpoint."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from talkfactory.errors import ConfigurationError
from talkfactory.factory.notify import NOTIFY_AUTOMATION, NOTIFY_EVENTS, ensure_notify_automation

pytestmark = pytest.mark.servers


@contextmanager
def receiver() -> Iterator[tuple[str, list[bytes]]]:
    """An HTTP endpoint on 127.0.0.1 that keeps every POST body."""
    bodies: list[bytes] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            bodies.append(self.rfile.read(int(self.headers.get("content-length", 0))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", bodies
    finally:
        server.shutdown()


def test_a_recording_with_failed_renders_is_sent_through_the_block() -> None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client
    from prefect.events import emit_event
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with receiver() as (url, bodies), prefect_test_harness(server_startup_timeout=120):
        api = PREFECT_API_URL.value()
        with pytest.raises(ConfigurationError, match="custom-webhook/ops"):
            ensure_notify_automation(api, "custom-webhook/ops")
        CustomWebhookNotificationBlock(
            name="ops", url=url, json_data={"text": "{{body}}"}, allow_private_urls=True
        ).save("ops")
        assert ensure_notify_automation(api, "custom-webhook/ops")
        assert ensure_notify_automation(api, "custom-webhook/ops")  # again: replaced, not doubled
        with get_client(sync_client=True) as client:
            found = client.read_automations_by_name(NOTIFY_AUTOMATION)
        assert len(found) == 1 and found[0].trigger.expect == set(NOTIFY_EVENTS)  # type: ignore[union-attr]
        time.sleep(2)  # the triggers service loads the new automation
        # What process-recording emits for a recording with failed renders (flows/process_recording.py).
        emit_event(
            event="talkfactory.recording.done-with-failures",
            resource={"prefect.resource.id": "talkfactory.recording.7", "prefect.resource.name": "show.flv"},
            payload={"message": "2 of 12 renders failed"},
        )
        deadline = time.monotonic() + 60
        while not bodies and time.monotonic() < deadline:
            time.sleep(0.5)
    assert bodies, "no notification arrived within 60 s"
    assert b"talkfactory.recording.done-with-failures: show.flv (2 of 12 renders failed)" in bodies[0]
