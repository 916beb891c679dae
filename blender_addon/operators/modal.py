"""The timer both long-running operators (Segment Scene, Render Blender-HS dataset) step on: one view per
timer event, so Blender redraws and takes clicks between views."""

from __future__ import annotations

#: Seconds between two timer events (the work of a step, one view, sets the real pace).
TICK_S = 0.01


def start(operator, context) -> set[str]:
    """Add the operator's timer and modal handler; returns ``{"RUNNING_MODAL"}``."""
    wm = context.window_manager
    operator._timer = wm.event_timer_add(TICK_S, window=context.window)
    wm.modal_handler_add(operator)
    return {"RUNNING_MODAL"}


def end(operator, context) -> None:
    """Remove the operator's timer and redraw, so the panel shows the final state."""
    context.window_manager.event_timer_remove(operator._timer)
    for area in context.screen.areas if context.screen else ():
        area.tag_redraw()


def is_own_tick(operator, event) -> bool:
    """Whether ``event`` is this operator's timer firing."""
    return event.type == "TIMER" and event.timer is operator._timer
