"""Where speech starts and ends in a mono 16-bit WAV: the first and last 20 ms frame whose RMS
exceeds 1% of full scale. Shared by the manifest writers in this folder (stdlib only)."""
import math
import struct
import wave


def bounds(path):
    """(rate, start_s, end_s); start/end are None when no frame is loud enough."""
    w = wave.open(path, "rb")
    sr, n = w.getframerate(), w.getnframes()
    s = struct.unpack("<%dh" % n, w.readframes(n))
    fl = sr // 50  # 20 ms
    loud = []
    for i in range(0, n - fl + 1, fl):
        fr = s[i:i + fl]
        loud.append(math.sqrt(sum(x * x for x in fr) / fl) > 0.01 * 32768)
    if not any(loud):
        return sr, None, None
    first = loud.index(True)
    last = len(loud) - 1 - loud[::-1].index(True)
    return sr, round(first * 0.02, 2), round((last + 1) * 0.02, 2)
