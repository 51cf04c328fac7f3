"""What leaves the home: only streams the grant covers, at the finest resolution it allows.

Polls of a stream granted at ``raw`` pass through. For a coarser grant, each device's polls are
gathered into buckets aligned to UTC (quarter hours, hours, days; a bucket is (end - size, end])
and one aggregate leaves per bucket: counters exact at its last poll, power from the counters over
the bucket. The first bucket after start-up, a change of grant or the clock going back (a Pi's
clock may be stepped back by NTP) only sets the starting point, so no aggregate ever covers less
than its resolution, nor a span that ends before it starts. Streams the grant does not cover are
dropped here, before the outbox: what was recorded while a stream was not granted cannot leave
later.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.outbox import Polled
from protocol.aggregate import Sample, merge
from protocol.consent import RESOLUTION_MS, ConsentGrant, Resolution


@dataclass
class _Bucket:
    size_ms: int
    end_ms: int = 0
    samples: list[Sample] = field(default_factory=list)
    base: Sample | None = None  # the last poll of the previous bucket

    def later_than(self, ts_ms: int) -> bool:
        """Holds a poll after ``ts_ms``: the clock went back."""
        last = self.samples[-1] if self.samples else self.base
        return last is not None and last.ts_ms > ts_ms


def bucket_end_ms(ts_ms: int, size_ms: int) -> int:
    """End of the bucket holding ``ts_ms``: buckets are (end - size, end], aligned to epoch."""
    return -(-ts_ms // size_ms) * size_ms


class Releaser:
    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}

    def release(self, polled: list[Polled], grant: ConsentGrant) -> list[Polled]:
        out: list[Polled] = []
        for p in polled:
            resolution = grant.release_resolution(p.role)
            if resolution is None:
                self._buckets.pop(p.device, None)
                continue
            if resolution is Resolution.RAW:
                self._buckets.pop(p.device, None)
                out.append(p)
                continue
            size = RESOLUTION_MS[resolution]
            bucket = self._buckets.get(p.device)
            if bucket is None or bucket.size_ms != size or bucket.later_than(p.ts_ms):
                bucket = self._buckets[p.device] = _Bucket(size)
            end = bucket_end_ms(p.ts_ms, size)
            if bucket.samples and end != bucket.end_ms:
                out += self._close(p, bucket)  # the previous bucket ended without a poll on its end
            bucket.end_ms = end
            bucket.samples.append(Sample(p.ts_ms, p.quantities))
            if p.ts_ms == end:
                out += self._close(p, bucket)
        return out

    @staticmethod
    def _close(p: Polled, bucket: _Bucket) -> list[Polled]:
        samples, base = bucket.samples, bucket.base
        bucket.samples, bucket.base = [], samples[-1]
        if base is None:
            return []  # only a starting point: a partial first bucket is finer than granted
        agg = merge(p.role, samples, base)
        return [Polled(p.device, p.role, agg.ts_ms, agg.quantities, agg.period_ms)]
