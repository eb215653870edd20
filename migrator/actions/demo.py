"""Demo actions: act on marker files (``ctx`` run folder or ``target.markers_dir``)."""

from __future__ import annotations

import time
from typing import Any

from migrator.actions.base import Action, register_action
from migrator.actions.context import PreviewLine, StepContext, markers_dir
from migrator.errors import StepFailed, TemporaryError
from migrator.plan.models import DemoFailArgs, DemoSleepArgs, DemoTouchArgs


def _node_name(ctx: StepContext) -> str | None:
    return ctx.node.name if ctx.node else None


@register_action("demo.touch")
class Touch(Action[DemoTouchArgs]):
    """Create a marker file; undo removes it. ``fail_when`` equal to the marker makes it fail."""

    def do(self, ctx: StepContext, args: DemoTouchArgs) -> Any:
        if args.fail_when and args.fail_when == args.marker:
            raise StepFailed(
                f"demo.touch: failing on purpose at marker {args.marker!r}", node=_node_name(ctx)
            )
        path = markers_dir(ctx.run_dir, ctx.target) / args.marker
        path.write_text(f"{ctx.run_id}\n")
        return {"marker": args.marker}

    def undo(self, ctx: StepContext, args: DemoTouchArgs, result: Any) -> None:
        if args.fail_undo:
            raise StepFailed(
                f"demo.touch: undo of marker {args.marker!r} fails on purpose", node=_node_name(ctx)
            )
        (markers_dir(ctx.run_dir, ctx.target) / args.marker).unlink(missing_ok=True)

    def preview(self, ctx: StepContext, args: DemoTouchArgs) -> list[PreviewLine]:
        lines: list[PreviewLine] = [f"create marker {args.marker!r}"]
        if args.fail_when and args.fail_when == args.marker:
            lines.append(f"will FAIL on purpose (fail_when={args.fail_when!r})")
        return lines

    def undo_preview(self, ctx: StepContext, args: DemoTouchArgs) -> list[PreviewLine]:
        return [f"remove marker {args.marker!r}"]


@register_action("demo.sleep")
class Sleep(Action[DemoSleepArgs]):
    """Sleep (cancellable); nothing to undo."""

    def do(self, ctx: StepContext, args: DemoSleepArgs) -> Any:
        started = time.monotonic()
        ctx.sleep(args.duration)
        return {"slept": round(time.monotonic() - started, 3)}

    def undo(self, ctx: StepContext, args: DemoSleepArgs, result: Any) -> None:
        return None

    def preview(self, ctx: StepContext, args: DemoSleepArgs) -> list[PreviewLine]:
        return [f"sleep {args.duration:g}s"]


@register_action("demo.fail")
class Fail(Action[DemoFailArgs]):
    """Always fail: permanently, or with a retryable error (``temporary: true``)."""

    def do(self, ctx: StepContext, args: DemoFailArgs) -> Any:
        if args.temporary:
            raise TemporaryError(f"demo.fail: {args.message}", delay=0.0)
        raise StepFailed(f"demo.fail: {args.message}", node=_node_name(ctx))

    def undo(self, ctx: StepContext, args: DemoFailArgs, result: Any) -> None:
        return None

    def preview(self, ctx: StepContext, args: DemoFailArgs) -> list[PreviewLine]:
        kind = "a retryable error" if args.temporary else "an error"
        return [f"fail with {kind}: {args.message}"]
