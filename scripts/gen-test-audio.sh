#!/usr/bin/env bash
# Reproducibly generate the test WAVs used by asr_bridge's tests.
#
# Usage: scripts/gen-test-audio.sh [OUTDIR]     (default: test-audio)
#
# Requires espeak-ng (with the Korean voice "ko") and sox.  Every file is
# mono, signed 16-bit little-endian PCM in a plain 44-byte-header RIFF WAV.
# espeak-ng is run with a fixed voice/speed/pitch/amplitude, and sox is run
# with -D (no dither) and -R (repeatable PRNG seed), so the output is
# byte-for-byte deterministic for a given espeak-ng/sox version
# (generated with espeak-ng 1.51 and SoX 14.4.2).
#
# Afterwards OUTDIR/manifest.json is rewritten.  speech_start_s/speech_end_s
# are measured from the samples (first/last 20 ms frame with RMS > 1% FS).
# The "recognized" field is filled by running libvosk on each file if
# VOSK_PYTHON (a python with the `vosk` package) and VOSK_MODEL (model dir)
# are set; otherwise the value from the existing manifest is kept.
set -euo pipefail

OUT="${1:-test-audio}"
mkdir -p "$OUT"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

ESPEAK_VOICE=ko
ESPEAK_SPEED=150   # words per minute
ESPEAK_PITCH=50
ESPEAK_AMP=100

SOX=(sox -D -R)
FMT=(-b 16 -e signed-integer -c 1)

# Texts (also used by the manifest below).
TXT_HELLO="안녕하세요 반갑습니다"
TXT_NUMBERS="하나 둘 셋 넷 다섯"
TXT_WEATHER="오늘 날씨가 정말 좋네요"
TXT_LONG="안녕하세요 저는 음성 인식 시험을 하고 있습니다 오늘 날씨가 정말 좋네요 하나 둘 셋 넷 다섯 여섯 일곱 여덟 아홉 열 내일은 비가 올 것 같습니다 감사합니다"

# speech NAME RATE TEXT LEAD_S TAIL_S PEAK_DBFS [WORDGAP]
#   espeak-ng -> trim leading/trailing silence -> resample -> normalise peak
#   -> pad with digital silence.
speech() {
  local name=$1 rate=$2 text=$3 lead=$4 tail=$5 peak=$6 gap=${7:-}
  local raw="$TMP/$name.raw.wav"
  local gapopt=()
  [[ -n "$gap" ]] && gapopt=(-g "$gap")
  espeak-ng -v "$ESPEAK_VOICE" -s "$ESPEAK_SPEED" -p "$ESPEAK_PITCH" \
    -a "$ESPEAK_AMP" "${gapopt[@]}" -w "$raw" "$text"
  local squeeze=()
  # For continuous speech, shorten any inner pause longer than 100 ms.
  [[ -n "$gap" ]] && squeeze=(silence -l 1 0.02 0.5% -1 0.1 0.5%)
  "${SOX[@]}" "$raw" "${FMT[@]}" -r "$rate" "$OUT/$name" \
    silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse \
    "${squeeze[@]}" \
    rate -h "$rate" norm "$peak" pad "$lead" "$tail"
}

speech ko-hello-8k.wav        8000  "$TXT_HELLO"   0.5 1.5 -3
speech ko-hello-16k.wav       16000 "$TXT_HELLO"   0.5 1.5 -3
speech ko-hello-quiet-8k.wav  8000  "$TXT_HELLO"   0.5 1.5 -15
speech ko-numbers-8k.wav      8000  "$TXT_NUMBERS" 0.5 1.5 -3
speech ko-weather-8k.wav      8000  "$TXT_WEATHER" 1.5 1.5 -3
speech ko-long-8k.wav         8000  "$TXT_LONG"    0.3 1.0 -3 0

"${SOX[@]}" -n "${FMT[@]}" -r 8000 "$OUT/silence-3s-8k.wav" trim 0 3
"${SOX[@]}" -n "${FMT[@]}" -r 8000 "$OUT/noise-2s-8k.wav" synth 2 whitenoise vol 0.02

# ---------------------------------------------------------------------------
# manifest.json
# ---------------------------------------------------------------------------
# "recognized" = vosk FinalResult() text when the whole file is fed in
# 1600-sample chunks at the file's own rate, with a fresh recognizer as the
# FIRST recognition in a fresh process (vosk results for this model vary
# slightly with what the process decoded before, so one process per file).
recognize() {
  "$VOSK_PYTHON" - "$VOSK_MODEL" "$1" <<'PY'
import json, sys, wave, vosk
vosk.SetLogLevel(-1)
model = vosk.Model(sys.argv[1])
w = wave.open(sys.argv[2], "rb")
r = vosk.KaldiRecognizer(model, w.getframerate())
r.SetWords(True)
while True:
    d = w.readframes(1600)
    if not d:
        break
    r.AcceptWaveform(d)
print(json.loads(r.FinalResult()).get("text", ""))
PY
}

# name|kind|text
ENTRIES=(
  "ko-hello-8k.wav|speech|$TXT_HELLO"
  "ko-hello-16k.wav|speech|$TXT_HELLO"
  "ko-hello-quiet-8k.wav|speech|$TXT_HELLO"
  "ko-numbers-8k.wav|speech|$TXT_NUMBERS"
  "ko-weather-8k.wav|speech|$TXT_WEATHER"
  "ko-long-8k.wav|speech|$TXT_LONG"
  "silence-3s-8k.wav|silence|"
  "noise-2s-8k.wav|noise|"
)

: > "$TMP/entries"
for e in "${ENTRIES[@]}"; do
  IFS='|' read -r name kind text <<<"$e"
  rec=""
  have_rec=0
  if [[ -n "${VOSK_PYTHON:-}" && -n "${VOSK_MODEL:-}" ]]; then
    rec="$(recognize "$OUT/$name")"
    have_rec=1
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$kind" "$text" "$have_rec" "$rec" >>"$TMP/entries"
done

SCRIPTS_DIR="$(cd "$(dirname "$0")" && pwd)" python3 - "$OUT" "$TMP/entries" <<'PY'
import json, math, os, struct, sys, wave
out, entries = sys.argv[1], sys.argv[2]
mpath = os.path.join(out, "manifest.json")
old = {}
if os.path.exists(mpath):
    try:
        old = {o["file"]: o for o in json.load(open(mpath, encoding="utf-8"))}
    except Exception:
        old = {}

sys.path.insert(0, os.environ["SCRIPTS_DIR"])
from speech_bounds import bounds  # noqa: E402

res = []
for line in open(entries, encoding="utf-8"):
    name, kind, text, have_rec, rec = line.rstrip("\n").split("\t")
    sr, start, end = bounds(os.path.join(out, name))
    if have_rec != "1":
        rec = old.get(name, {}).get("recognized", "")
    res.append({"file": name, "text": text, "language": "ko", "rate": sr,
                "speech_start_s": start, "speech_end_s": end,
                "kind": kind, "recognized": rec})
with open(mpath, "w", encoding="utf-8") as f:
    json.dump(res, f, ensure_ascii=False, indent=2)
    f.write("\n")
PY
echo "wrote $(ls "$OUT"/*.wav | wc -l) WAVs and $OUT/manifest.json" >&2
