#!/usr/bin/env bash
# Write a manifest.json (same format as test-audio/manifest.json) for the
# English Asterisk core sounds (Allison Smith, 8 kHz mono 16-bit WAV), to test
# asr_bridge with an English Vosk model on real recorded speech.
#
# Usage: scripts/core-sounds-manifest.sh [OUTDIR]      (default: corpus-en)
#
# Needs Debian's asterisk-core-sounds-en-wav (the WAVs, in
# /usr/share/asterisk/sounds/en_US_f_Allison) and asterisk-core-sounds-en (the
# "en" alternatives link and /usr/share/doc/asterisk-core-sounds-en/
# core-sounds-en.txt.gz, the transcripts: one "name: text" line per prompt).
# Override the locations with ASTERISK_SOUNDS_DIR and ASTERISK_SOUNDS_TXT,
# e.g. to use the packages unpacked without installing them:
#
#   apt-get download asterisk-core-sounds-en-wav asterisk-core-sounds-en
#   for d in asterisk-core-sounds-en*.deb; do dpkg -x "$d" /tmp/acs; done
#   ASTERISK_SOUNDS_DIR=/tmp/acs/usr/share/asterisk/sounds/en_US_f_Allison \
#   ASTERISK_SOUNDS_TXT=/tmp/acs/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz \
#     scripts/core-sounds-manifest.sh corpus-en
#
# Entries: "file" is the WAV's absolute path, "language" "en", "kind"
# "speech" (silence/* prompts: "silence"; prompts whose transcript is only a
# [bracketed description], i.e. tones/beeps: "noise", text ""), bracketed
# annotations such as "at [@]" are removed from the text, speech_start_s/
# speech_end_s are measured from the samples (first/last 20 ms frame with RMS
# > 1% of full scale; null when none) and "recognized" is "".  Transcript
# lines without a WAV are skipped (with a note on stderr).
set -euo pipefail

OUT="${1:-corpus-en}"

pick() {  # first existing path among the arguments
  local p
  for p in "$@"; do [[ -e "$p" ]] && { echo "$p"; return 0; }; done
  return 1
}

SOUNDS="${ASTERISK_SOUNDS_DIR:-$(pick /usr/share/asterisk/sounds/en \
  /usr/share/asterisk/sounds/en_US_f_Allison /var/lib/asterisk/sounds/en || true)}"
if [[ -z "$SOUNDS" || ! -d "$SOUNDS" ]] || ! compgen -G "$SOUNDS/*.wav" >/dev/null; then
  cat >&2 <<'EOF'
core-sounds-manifest: English Asterisk core sounds (WAV) not found.
Install them (Debian/Ubuntu):
    sudo apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-en
or unpack them without installing and point this script at them:
    apt-get download asterisk-core-sounds-en-wav asterisk-core-sounds-en
    for d in asterisk-core-sounds-en*.deb; do dpkg -x "$d" /tmp/acs; done
    export ASTERISK_SOUNDS_DIR=/tmp/acs/usr/share/asterisk/sounds/en_US_f_Allison
    export ASTERISK_SOUNDS_TXT=/tmp/acs/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz
(Upstream: https://downloads.asterisk.org/pub/telephony/sounds/asterisk-core-sounds-en-wav-current.tar.gz,
which has core-sounds-en.txt next to the WAVs.)
EOF
  exit 1
fi
SOUNDS="$(cd "$SOUNDS" && pwd -P)"

TXT="${ASTERISK_SOUNDS_TXT:-$(pick "$SOUNDS/core-sounds-en.txt" \
  /usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz \
  /usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt || true)}"
if [[ -z "$TXT" || ! -f "$TXT" ]]; then
  cat >&2 <<EOF
core-sounds-manifest: WAVs found in $SOUNDS but not the transcripts
(core-sounds-en.txt).  Install asterisk-core-sounds-en (it ships
/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz; note that some
container images drop /usr/share/doc on install), or set ASTERISK_SOUNDS_TXT.
EOF
  exit 1
fi

mkdir -p "$OUT"
python3 - "$SOUNDS" "$TXT" "$OUT/manifest.json" <<'PY'
import array, gzip, json, math, os, re, sys, wave
sounds, txt, mpath = sys.argv[1:4]

def bounds(path):
    w = wave.open(path, "rb")
    if w.getsampwidth() != 2 or w.getnchannels() != 1:
        raise SystemExit("%s: not mono 16-bit" % path)
    sr, n = w.getframerate(), w.getnframes()
    s = array.array("h", w.readframes(n))
    if sys.byteorder == "big":
        s.byteswap()
    fl = sr // 50  # 20 ms
    thr = (0.01 * 32768) ** 2 * fl
    loud = [sum(x * x for x in s[i:i + fl]) > thr
            for i in range(0, n - fl + 1, fl)]
    if not any(loud):
        return sr, None, None
    first = loud.index(True)
    last = len(loud) - 1 - loud[::-1].index(True)
    return sr, round(first * 0.02, 2), round((last + 1) * 0.02, 2)

opener = gzip.open if txt.endswith(".gz") else open
res, missing = [], []
with opener(txt, "rt", encoding="utf-8", errors="replace") as f:
    for line in f:
        line = line.strip()
        if not line or line.startswith(";") or ": " not in line:
            continue
        name, text = line.split(": ", 1)
        path = os.path.join(sounds, name + ".wav")
        if not os.path.isfile(path):
            missing.append(name)
            continue
        kind = "speech"
        text = re.sub(r"\s+", " ", re.sub(r"\[[^\]]*\]", "", text)).strip()
        if name.startswith("silence/"):
            kind, text = "silence", ""
        elif not text:
            kind = "noise"
        sr, start, end = bounds(path)
        res.append({"file": path, "text": text, "language": "en", "rate": sr,
                    "speech_start_s": start, "speech_end_s": end,
                    "kind": kind, "recognized": ""})
with open(mpath, "w", encoding="utf-8") as f:
    json.dump(res, f, ensure_ascii=False, indent=2)
    f.write("\n")
if missing:
    print("core-sounds-manifest: no WAV for: " + " ".join(missing), file=sys.stderr)
print("core-sounds-manifest: %d entries in %s" % (len(res), mpath), file=sys.stderr)
PY
