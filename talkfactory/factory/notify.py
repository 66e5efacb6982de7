"""The automation that tells someone when a recording went wrong: ``factory up`` creates it when a
notification block is named (``TALKFACTORY_NOTIFY_BLOCK``).

It fires on the events ``process-recording`` emits for a recording with failed renders or one that
cannot be used (``talkfactory.recording.done-with-failures`` / ``.unusable``), and on any flow run that
ends Failed or Crashed; its action sends the event through the block (a custom webhook, Slack,
e-mail... any Prefect notification block the user created, e.g. ``CustomWebhookNotificationBlock``).
"""

from __future__ import annotations

from prefect.automations import Automation
from prefect.client.orchestration import get_client
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.settings import PREFECT_API_URL, temporary_settings

from talkfactory.errors import ConfigurationError

NOTIFY_AUTOMATION = "talkfactory: notify on failed recordings"
NOTIFY_EVENTS = frozenset(
    {
        "talkfactory.recording.done-with-failures",
        "talkfactory.recording.unusable",
        "prefect.flow-run.Failed",
        "prefect.flow-run.Crashed",
    }
)
BODY = (
    "{{ event.event }}: {{ event.resource.get('prefect.resource.name', event.resource.id) }}"
    "{% if event.payload.get('message') %} ({{ event.payload.message }}){% endif %}"
)


def ensure_notify_automation(api_url: str, block_slug: str) -> bool:
    """Create (or replace) the automation sending through the block ``<type-slug>/<name>``
    (``custom-webhook/ops``); True when created. ``ConfigurationError`` when no such block exists."""
    if "/" not in block_slug:
        raise ConfigurationError(
            "name the block as <block type>/<block name>, e.g. custom-webhook/ops", subject=block_slug
        )
    type_slug, name = block_slug.split("/", 1)
    with temporary_settings({PREFECT_API_URL: api_url}):
        with get_client(sync_client=True) as client:
            try:
                block = client.read_block_document_by_name(name, block_type_slug=type_slug)
            except Exception as exc:  # noqa: BLE001 - ObjectNotFound and friends: say which block
                raise ConfigurationError(
                    f"no notification block {block_slug!r} on the Prefect server ({type(exc).__name__}); "
                    "create it first (docs/factory.md, 'Notifications')",
                    subject="TALKFACTORY_NOTIFY_BLOCK",
                ) from exc
            for old in client.read_automations_by_name(NOTIFY_AUTOMATION):
                client.delete_automation(old.id)
        notify_automation(block.id).create()
    return True


def notify_automation(block_document_id: object) -> Automation:
    return Automation(
        name=NOTIFY_AUTOMATION,
        description="A recording with failed renders, an unusable recording, or a failed or crashed run.",
        trigger=EventTrigger(
            expect=set(NOTIFY_EVENTS),
            match=ResourceSpecification(
                {"prefect.resource.id": ["talkfactory.recording.*", "prefect.flow-run.*"]}
            ),
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[
            SendNotification(
                block_document_id=block_document_id,  # type: ignore[arg-type]
                subject="talkfactory: {{ event.event }}",
                body=BODY,
            )
        ],
    )
