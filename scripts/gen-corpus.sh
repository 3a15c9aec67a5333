#!/usr/bin/env bash
# Reproducibly generate a larger Korean test corpus (about 50 WAVs) for
# benchmarks and accuracy/latency sweeps.  The corpus is NOT committed: the
# default OUTDIR (corpus/) is git-ignored.
#
# Usage: scripts/gen-corpus.sh [OUTDIR]     (default: corpus)
#
# Requires espeak-ng (Korean voice "ko"), sox and python3 (stdlib only).
# Every file is mono, signed 16-bit little-endian PCM in a plain RIFF WAV.
# Like scripts/gen-test-audio.sh, espeak-ng runs with fixed parameters and
# sox with -D (no dither) and -R (repeatable PRNG seed), so the output is
# byte-for-byte deterministic for a given espeak-ng/sox version
# (made with espeak-ng 1.51 and SoX 14.4.2).
#
# Variants (file names: ko-<sentence>-<rate>-<variant>.wav):
#   base    6 sentences, 150 wpm, peak -3 dBFS, 0.5 s lead / 1.5 s tail, 8k+16k
#   s120/s180  speaking rate 120 / 180 wpm
#   m12/m20    peak -12 / -20 dBFS
#   padX       X s of digital silence both before and after the speech
#   nlo/nhi    white noise over the whole file (sox synth whitenoise, RMS
#              about -47 / -43 dBFS, i.e. below the -40 dBFS = 1% FS speech
#              threshold), speech at -3 dBFS
#   long       two ~20 s utterances (continuous; with espeak's pauses)
#   silence-*  digital silence;  noise-*  white noise only
#
# OUTDIR/manifest.json has the same format as test-audio/manifest.json:
# speech_start_s/speech_end_s are measured from the samples (first/last 20 ms
# frame with RMS > 1% of full scale; null when none), "recognized" is left
# empty (this script does not run vosk).
set -euo pipefail

OUT="${1:-corpus}"
mkdir -p "$OUT"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

ESPEAK_VOICE=ko
ESPEAK_PITCH=50
ESPEAK_AMP=100

SOX=(sox -D -R)
FMT=(-b 16 -e signed-integer -c 1)

# id|text
SENTENCES=(
  "hello|안녕하세요 반갑습니다"
  "numbers|하나 둘 셋 넷 다섯"
  "weather|오늘 날씨가 정말 좋네요"
  "agent|상담원을 연결해 주세요"
  "phone|제 전화번호는 공일공 일이삼사 오육칠팔 입니다"
  "cancel|예약을 취소하고 싶습니다"
)
declare -A TEXT
for s in "${SENTENCES[@]}"; do TEXT[${s%%|*}]="${s#*|}"; done

TXT_LONG1="안녕하세요 저는 음성 인식 시험을 하고 있습니다 오늘 날씨가 정말 좋네요 하나 둘 셋 넷 다섯 여섯 일곱 여덟 아홉 열 내일은 비가 올 것 같습니다 상담원을 연결해 주세요 제 전화번호는 공일공 일이삼사 오육칠팔 입니다 감사합니다"
TXT_LONG2="지난주에 주문한 물건이 아직 도착하지 않았습니다 배송 상태를 확인해 주시겠어요 주문 번호는 일이삼사 오육칠팔 입니다 오늘 안에 도착하지 않으면 주문을 취소하고 환불을 받고 싶습니다 감사합니다"

: > "$TMP/entries"
entry() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$TMP/entries"; }

# noisevol RATE lo|hi -> sox "synth whitenoise vol" argument.  SoX's white
# noise comes out about 3 dB louder at 16 kHz than at 8 kHz for the same vol,
# so 16 kHz uses 1/sqrt(2) of the 8 kHz value to get the same RMS level.
noisevol() {
  case "$1:$2" in
    8000:lo) echo 0.02 ;; 8000:hi) echo 0.03 ;;
    16000:lo) echo 0.014 ;; 16000:hi) echo 0.021 ;;
    *) echo "noisevol: bad $1:$2" >&2; return 1 ;;
  esac
}

# speech NAME RATE TEXT LEAD_S TAIL_S PEAK_DBFS WPM [NOISE lo|hi] [CONTINUOUS]
#   espeak-ng -> trim leading/trailing silence -> resample -> normalise peak
#   -> pad with digital silence [-> mix in white noise over the whole file].
speech() {
  local name=$1 rate=$2 text=$3 lead=$4 tail=$5 peak=$6 wpm=$7
  local noise=${8:-} cont=${9:-}
  local raw="$TMP/$name.raw.wav" clean="$TMP/$name.clean.wav"
  local gapopt=() squeeze=()
  if [[ -n "$cont" ]]; then
    # Continuous speech: no inter-word gap, inner pauses squeezed to 100 ms.
    gapopt=(-g 0)
    squeeze=(silence -l 1 0.02 0.5% -1 0.1 0.5%)
  fi
  espeak-ng -v "$ESPEAK_VOICE" -s "$wpm" -p "$ESPEAK_PITCH" -a "$ESPEAK_AMP" \
    "${gapopt[@]}" -w "$raw" "$text"
  "${SOX[@]}" "$raw" "${FMT[@]}" -r "$rate" "$clean" \
    silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse \
    "${squeeze[@]}" \
    rate -h "$rate" norm "$peak" pad "$lead" "$tail"
  if [[ -n "$noise" ]]; then
    local n vol nz="$TMP/$name.noise.wav"
    n=$(soxi -s "$clean")
    vol=$(noisevol "$rate" "$noise")
    "${SOX[@]}" -n "${FMT[@]}" -r "$rate" "$nz" synth "${n}s" whitenoise vol "$vol"
    "${SOX[@]}" -m -v 1 "$clean" -v 1 "$nz" "${FMT[@]}" "$OUT/$name"
  else
    mv "$clean" "$OUT/$name"
  fi
  entry "$name" speech "$text"
}

# 1. Base set: every sentence at 8 kHz and 16 kHz.
for s in "${SENTENCES[@]}"; do
  id=${s%%|*}
  speech "ko-$id-8k-base.wav"  8000  "${TEXT[$id]}" 0.5 1.5 -3 150
  speech "ko-$id-16k-base.wav" 16000 "${TEXT[$id]}" 0.5 1.5 -3 150
done

# 2. Speaking rate.
for id in hello numbers weather; do
  for wpm in 120 180; do
    speech "ko-$id-8k-s$wpm.wav" 8000 "${TEXT[$id]}" 0.5 1.5 -3 "$wpm"
  done
done
for wpm in 120 180; do
  speech "ko-agent-16k-s$wpm.wav" 16000 "${TEXT[agent]}" 0.5 1.5 -3 "$wpm"
done

# 3. Level (peak dBFS).
for id in hello numbers agent; do
  for lvl in 12 20; do
    speech "ko-$id-8k-m$lvl.wav" 8000 "${TEXT[$id]}" 0.5 1.5 "-$lvl" 150
  done
done

# 4. Leading/trailing silence.
for id in hello weather; do
  for pad in 0.2 1 3; do
    speech "ko-$id-8k-pad$pad.wav" 8000 "${TEXT[$id]}" "$pad" "$pad" -3 150
  done
done

# 5. Added white noise.
for id in hello numbers cancel; do
  speech "ko-$id-8k-nlo.wav" 8000 "${TEXT[$id]}" 0.5 1.5 -3 150 lo
  speech "ko-$id-8k-nhi.wav" 8000 "${TEXT[$id]}" 0.5 1.5 -3 150 hi
done
speech "ko-phone-16k-nhi.wav" 16000 "${TEXT[phone]}" 0.5 1.5 -3 150 hi

# 6. Two long utterances (~20 s).
speech "ko-long1-8k-cont.wav"   8000 "$TXT_LONG1" 0.3 1.0 -3 150 "" cont
speech "ko-long2-8k-pauses.wav" 8000 "$TXT_LONG2" 0.3 1.0 -3 150

# 7. Silence only and noise only.
for spec in 8000:1 8000:3 8000:5 16000:3; do
  rate=${spec%%:*} dur=${spec#*:}
  name="silence-${dur}s-$((rate / 1000))k.wav"
  "${SOX[@]}" -n "${FMT[@]}" -r "$rate" "$OUT/$name" trim 0 "$dur"
  entry "$name" silence ""
done
for spec in 8000:2:lo 8000:3:hi 16000:2:lo 16000:3:hi; do
  IFS=: read -r rate dur cls <<<"$spec"
  name="noise-${dur}s-$((rate / 1000))k-$cls.wav"
  "${SOX[@]}" -n "${FMT[@]}" -r "$rate" "$OUT/$name" \
    synth "$dur" whitenoise vol "$(noisevol "$rate" "$cls")"
  entry "$name" noise ""
done

# ---------------------------------------------------------------------------
# manifest.json (same format as test-audio/manifest.json)
# ---------------------------------------------------------------------------
SCRIPTS_DIR="$(cd "$(dirname "$0")" && pwd)" python3 - "$OUT" "$TMP/entries" <<'PY'
import json, math, os, struct, sys, wave
out, entries = sys.argv[1], sys.argv[2]

sys.path.insert(0, os.environ["SCRIPTS_DIR"])
from speech_bounds import bounds  # noqa: E402

res = []
for line in open(entries, encoding="utf-8"):
    name, kind, text = line.rstrip("\n").split("\t")
    sr, start, end = bounds(os.path.join(out, name))
    res.append({"file": name, "text": text, "language": "ko", "rate": sr,
                "speech_start_s": start, "speech_end_s": end,
                "kind": kind, "recognized": ""})
with open(os.path.join(out, "manifest.json"), "w", encoding="utf-8") as f:
    json.dump(res, f, ensure_ascii=False, indent=2)
    f.write("\n")
PY
echo "wrote $(wc -l <"$TMP/entries") WAVs and $OUT/manifest.json" >&2
