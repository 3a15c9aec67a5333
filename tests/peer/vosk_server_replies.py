"""The replies vosk-server (websocket/asr_server.py) sends for one call, made the way it makes
them: a KaldiRecognizer per connection on the shared model, SetWords/SetMaxAlternatives from the
config, each binary message to AcceptWaveform, then Result() or PartialResult(), and
FinalResult() on eof. The reference for the byte-compatibility test (tests/hardening.rs).

usage: vosk_server_replies.py MODEL RATE CHUNK_BYTES < audio.raw  -> a JSON list of the replies
"""
import json
import sys

from vosk import KaldiRecognizer, Model, SetLogLevel

SetLogLevel(-1)
model_dir, rate, chunk = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
audio = sys.stdin.buffer.read()
rec = KaldiRecognizer(Model(model_dir), rate)
rec.SetWords(True)
rec.SetMaxAlternatives(0)
replies = []
for at in range(0, len(audio), chunk):
    if rec.AcceptWaveform(audio[at:at + chunk]):
        replies.append(rec.Result())
    else:
        replies.append(rec.PartialResult())
replies.append(rec.FinalResult())
json.dump(replies, sys.stdout)
