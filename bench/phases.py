#!/usr/bin/env python3
"""Where a small transfer's time goes, from a capture on the edge.

  phases.py CAPTURE

CAPTURE is `tcpdump -i any -tt -n -l` text of the control connections' segments that
carry data (PSH), taken in the edge's namespace while bench/setup_rate.py ran. Each
control message crosses the edge once: it comes in on one interface and leaves on the
other. Prints one line of JSON: per message (EPSV, 229, RETR, ...), the median time
between coming in and leaving, that is the time inside the edge (the proxy's wake-up,
its work, its send; a few microseconds for the kernel helper); their sum per transfer;
and per step between the edge sending a message and the next one coming in (the
client's or the server's turn), the median.
"""
import json
import re
import statistics
import sys

LINE = re.compile(r"(\d+\.\d+) (\S+)\s+(In|Out) .*length \d+: FTP: (\S+)")


def main():
    rows = []
    with open(sys.argv[1]) as capture:
        for line in capture:
            m = LINE.match(line)
            if m:
                rows.append((float(m.group(1)), m.group(2), m.group(3), m.group(4)[:4]))
    inside, outside = {}, {}
    for i, (t, interface, way, what) in enumerate(rows):
        for t2, interface2, way2, what2 in rows[i + 1:i + 4]:
            if way == "In" and way2 == "Out" and interface2 != interface:
                inside.setdefault(what, []).append(t2 - t)
                break
            if way == "Out" and way2 == "In":
                outside.setdefault(f"{what}>{what2}", []).append(t2 - t)
                break
    # A message kind seen in fewer than a tenth of the transfers is noise (the login).
    enough = max(len(v) for v in inside.values()) // 10 if inside else 0
    inside = {k: statistics.median(v) * 1e6 for k, v in inside.items() if len(v) > enough}
    outside = {k: statistics.median(v) * 1e6 for k, v in outside.items() if len(v) > enough}
    print(json.dumps({
        "inside_us": {k: round(v, 1) for k, v in sorted(inside.items())},
        "inside_total_us": round(sum(inside.values()), 1),
        "outside_us": {k: round(v, 1) for k, v in sorted(outside.items())},
    }))


if __name__ == "__main__":
    main()
