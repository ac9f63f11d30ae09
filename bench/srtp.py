"""SRTP cost per packet with the pylibsrtp aiortc uses (decision 0007's "what remains").

    .venv/bin/python -m bench.srtp [--packets 20000] [--size 1200]

Protects and then unprotects ``--packets`` RTP packets of ``--size`` bytes with
AES128_CM_SHA1_80 (what browsers negotiate with aiortc) and prints the microseconds of
one protect and of one unprotect. A forwarded packet costs one of each.
"""

from __future__ import annotations

import argparse
import os
import struct
import time

from pylibsrtp import Policy, Session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=1200, help="RTP packet bytes")
    args = parser.parse_args()
    # pylibsrtp protects at most 1500 bytes less its 144-byte trailer allowance.
    if not 0 < args.packets <= 1_000_000 or not 12 < args.size <= 1356:
        parser.error("--packets 1 to 1,000,000, --size 13 to 1356")
    key = os.urandom(30)
    profile = Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    tx = Session(policy=Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile))
    rx = Session(policy=Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile))
    packets = [
        struct.pack("!BBHII", 0x80, 96, n & 0xFFFF, n * 3000, 0x1234) + os.urandom(args.size - 12)
        for n in range(args.packets)
    ]
    start = time.perf_counter()
    protected = [tx.protect(p) for p in packets]
    middle = time.perf_counter()
    for p in protected:
        rx.unprotect(p)
    end = time.perf_counter()
    per = 1e6 / args.packets
    print(f"packets: {args.packets} of {args.size} bytes")
    print(f"protect:   {(middle - start) * per:.2f} us a packet")
    print(f"unprotect: {(end - middle) * per:.2f} us a packet")


if __name__ == "__main__":
    main()
