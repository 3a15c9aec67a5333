#!/usr/bin/env python3
"""The "common alternative": an in-process Python EAGI script using vosk.

What a typical user writes: read the AGI header, load the Vosk model, feed
fd 3 (8 kHz slin) into a KaldiRecognizer until Vosk's own endpoint fires (or
the audio ends), then SET VARIABLE PEER_TEXT / PEER_STATUS and exit.

    exten => 1,1,EAGI(/path/to/python,/path/to/vosk_eagi.py)

Environment: VOSK_MODEL (model directory, default /var/lib/asr_bridge/model).
At exit one JSON line with timestamps (time.time()) goes to stderr.
"""
import json
import os
import signal
import sys
import time

T = {"t_start": time.time(), "t_first_read": None,
     "t_model_loaded": None, "t_result": None}

import vosk  # noqa: E402  (after t_start so the import counts as start-up)


def report():
    sys.stderr.write(json.dumps(T) + "\n")
    sys.stderr.flush()


def on_hup(signum, frame):
    report()
    os._exit(0)


def agi(cmd):
    sys.stdout.write(cmd + "\n")
    sys.stdout.flush()
    return sys.stdin.readline().strip()


def main():
    signal.signal(signal.SIGHUP, on_hup)
    env = {}
    while True:
        line = sys.stdin.readline()
        if not line or not line.strip():
            break
        key, _, value = line.partition(":")
        env[key.strip()] = value.strip()

    vosk.SetLogLevel(-1)
    model = vosk.Model(os.environ.get("VOSK_MODEL", "/var/lib/asr_bridge/model"))
    T["t_model_loaded"] = time.time()
    rec = vosk.KaldiRecognizer(model, 8000)
    rec.SetWords(True)

    text = ""
    while True:
        data = os.read(3, 3200)
        if not data:
            text = json.loads(rec.FinalResult()).get("text", "")
            break
        if T["t_first_read"] is None:
            T["t_first_read"] = time.time()
        if rec.AcceptWaveform(data):
            text = json.loads(rec.Result()).get("text", "")
            break
    T["t_result"] = time.time()

    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    quoted = quoted.replace("\r", " ").replace("\n", " ")
    agi('SET VARIABLE PEER_TEXT "%s"' % quoted)
    agi('SET VARIABLE PEER_STATUS "%s"' % ("OK" if text else "NOMATCH"))
    report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
