#!/usr/bin/env python3
"""Decodes a Perfetto trace with Perfetto's own generated bindings (the PyPI
`perfetto` package, over `protobuf`) and prints what rmapwatch's tests check,
as JSON: the clock snapshot, the tracks, every counter sample and instant.

An implementation independent of rmapwatch's writer: tests/perfetto.rs
compares what it prints with the reports of the same recording.

Usage: perfetto_decode.py TRACE
"""
import json
import sys

from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import (
    Trace,
    TrackEvent,
    TracePacket,
)


def main():
    with open(sys.argv[1], "rb") as f:
        data = f.read()
    trace = Trace()
    trace.ParseFromString(data)
    out = {
        "packets": len(trace.packet),
        "clocks": {},
        "first": None,
        "sequences": sorted({p.trusted_packet_sequence_id for p in trace.packet}),
        "tracks": {},
        "counters": {},
        "instants": [],
    }
    for i, p in enumerate(trace.packet):
        if i == 0:
            out["first"] = {
                "sequence_flags": p.sequence_flags,
                "incremental_state_cleared": bool(
                    p.sequence_flags & TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
                ),
                "first_packet_on_sequence": p.first_packet_on_sequence,
            }
        if p.HasField("clock_snapshot"):
            for c in p.clock_snapshot.clocks:
                out["clocks"][str(c.clock_id)] = c.timestamp
        if p.HasField("track_descriptor"):
            d = p.track_descriptor
            t = {"name": d.name, "parent": d.parent_uuid if d.HasField("parent_uuid") else None}
            if d.HasField("process"):
                t["pid"] = d.process.pid
                t["process_name"] = d.process.process_name
            if d.HasField("counter"):
                t["counter_unit"] = d.counter.unit
            out["tracks"][str(d.uuid)] = t
        if p.HasField("track_event"):
            e = p.track_event
            clock = p.timestamp_clock_id if p.HasField("timestamp_clock_id") else None
            if e.type == TrackEvent.TYPE_COUNTER:
                out["counters"].setdefault(str(e.track_uuid), []).append(
                    [p.timestamp, e.counter_value]
                )
            elif e.type == TrackEvent.TYPE_INSTANT:
                out["instants"].append(
                    {
                        "ts": p.timestamp,
                        "clock": clock,
                        "track": e.track_uuid,
                        "name": e.name,
                        "categories": list(e.categories),
                    }
                )
            out.setdefault("event_clocks", set()).add(clock)
    out["event_clocks"] = sorted(
        (c for c in out.get("event_clocks", set())), key=lambda c: -1 if c is None else c
    )
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
