"""Server-rendered SVG charts: no script, no external assets, every label escaped."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from markupsafe import Markup, escape

__all__ = ["STACK_ORDER", "RunBuckets", "bucket_floor", "run_buckets", "runs_chart"]

#: Terminal stages bottom to top in a bar; failures on top, where the eye lands.
STACK_ORDER = ("completed", "skipped", "cancelled", "compensated", "failed")

_W, _H = 720, 180  # the drawing area, in viewBox units
_LEFT, _BOTTOM, _TOP = 36, 20, 8


def bucket_floor(value: datetime, bucket: timedelta) -> datetime:
    """The start of the bucket holding ``value``: buckets start at whole multiples of
    ``bucket`` since the epoch, as :meth:`JobClient.run_counts` counts them."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((value - epoch) // bucket) * bucket


@dataclass(frozen=True, slots=True)
class RunBuckets:
    """Runs ended per bucket and stage, every bucket present (zeros included)."""

    starts: tuple[datetime, ...]
    counts: tuple[dict[str, int], ...]
    bucket: timedelta

    @property
    def total(self) -> int:
        return sum(sum(c.values()) for c in self.counts)

    def stage_total(self, stage: str) -> int:
        return sum(c.get(stage, 0) for c in self.counts)


def run_buckets(
    rows: Sequence[tuple[datetime, str, int]], first: datetime, n: int, bucket: timedelta
) -> RunBuckets:
    """Spread ``run_counts`` rows over ``n`` buckets from ``first``; rows outside go."""
    starts = tuple(first + i * bucket for i in range(n))
    counts: list[dict[str, int]] = [{} for _ in starts]
    for at, stage, count in rows:
        index = (bucket_floor(at, bucket) - first) // bucket
        if 0 <= index < n:
            counts[index][stage] = counts[index].get(stage, 0) + count
    return RunBuckets(starts, tuple(counts), bucket)


def _nice_max(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``value`` (min 1)."""
    if value <= 1:
        return 1
    power: int = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power  # pragma: no cover - the loop always returns


def _tooltip(start: datetime, counts: dict[str, int]) -> str:
    parts = [f"{counts[s]} {s}" for s in STACK_ORDER if counts.get(s)]
    parts += [f"{n} {s}" for s, n in sorted(counts.items()) if s not in STACK_ORDER and n]
    return f"{start:%H:%M} UTC: " + (", ".join(parts) if parts else "no runs ended")


def runs_chart(data: RunBuckets, *, label_every: int = 15) -> Markup:
    """A stacked bar per bucket: runs that ended, by terminal stage, failures on top.

    Each bar carries a ``<title>`` (the browser's tooltip) with its counts; the chart's
    ``aria-label`` sums it up for screen readers."""
    n = max(len(data.starts), 1)
    top = _nice_max(max((sum(c.values()) for c in data.counts), default=0))
    plot_w, plot_h = _W - _LEFT, _H - _BOTTOM - _TOP
    slot = plot_w / n
    bar_w = max(slot - 2, 1)
    scale = plot_h / top
    base = _TOP + plot_h
    failed = data.stage_total("failed")
    summary = f"{data.total} runs ended in the last {len(data.starts)} buckets, {failed} failed"
    out = [
        f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" '
        f'aria-label="{escape(summary)}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for tick in (0, top // 2 if top >= 2 else None, top):
        if tick is None:
            continue
        y = base - tick * scale
        out.append(f'<line class="grid" x1="{_LEFT}" x2="{_W}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(
            f'<text class="axis" x="{_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>'
        )
    for i, (start, counts) in enumerate(zip(data.starts, data.counts, strict=True)):
        x = _LEFT + i * slot + 1
        y = base
        stages = [s for s in STACK_ORDER if counts.get(s)]
        stages += sorted(s for s in counts if s not in STACK_ORDER and counts[s])
        out.append(f"<g><title>{escape(_tooltip(start, counts))}</title>")
        # An invisible full-height hit area, so that empty minutes have a tooltip too.
        out.append(
            f'<rect class="hit" x="{x:.1f}" y="{_TOP}" width="{bar_w:.1f}" height="{plot_h}"/>'
        )
        for stage in stages:
            h = counts[stage] * scale
            y -= h
            out.append(
                f'<rect class="bar bar-{escape(stage)}" x="{x:.1f}" y="{y:.1f}" '
                f'width="{bar_w:.1f}" height="{h:.1f}"/>'
            )
        out.append("</g>")
        if label_every and i % label_every == 0:
            out.append(
                f'<text class="axis" x="{x:.1f}" y="{_H - 4}">{escape(f"{start:%H:%M}")}</text>'
            )
    out.append(f'<line class="baseline" x1="{_LEFT}" x2="{_W}" y1="{base}" y2="{base}"/>')
    out.append("</svg>")
    return Markup("".join(out))
