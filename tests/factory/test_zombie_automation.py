"""The zombie automation's trigger, as ``factory up`` creates it (the real run is in test_factory.py)."""

from __future__ import annotations

from datetime import timedelta

from prefect.events.schemas.automations import EventTrigger, Posture

from talkfactory.factory.bootstrap import _zombie_automation


def test_a_run_must_show_life_after_it_is_pending_running_or_heartbeating() -> None:
    trigger = _zombie_automation(90).trigger
    assert isinstance(trigger, EventTrigger)
    assert trigger.posture == Posture.Proactive and trigger.within == timedelta(seconds=90)
    # Armed by Pending and Running too: a run killed before its first heartbeat is still caught.
    assert trigger.after == {
        "prefect.flow-run.heartbeat",
        "prefect.flow-run.Pending",
        "prefect.flow-run.Running",
    }
    # Every sign of life or end disarms it; Running must be among them, or Pending would crash runs.
    assert {"prefect.flow-run.heartbeat", "prefect.flow-run.Running"} <= trigger.expect
    assert {
        f"prefect.flow-run.{s}" for s in ("Completed", "Failed", "Cancelled", "Crashed")
    } <= trigger.expect
    assert trigger.for_each == {"prefect.resource.id"}


def test_the_action_marks_the_run_crashed_with_a_reason() -> None:
    (action,) = _zombie_automation(45).actions
    assert action.type == "change-flow-run-state"
    assert action.state.value == "CRASHED"  # type: ignore[attr-defined]
    assert "45 s" in (action.message or "")  # type: ignore[attr-defined]
