#!/bin/sh
# Regenerates the load harness's speech prompts from free sources:
# espeak-ng (text to speech), sox (resample, level) and lame (MP3).
#
#   testdata/prompts/agent.mp3     an agent's voice (en-us, male, lower pitch)
#   testdata/prompts/customer.mp3  a customer's voice (en-gb, female variant, higher pitch)
#
# Both are 22050 Hz mono MP3 (MPEG-2 layer III): go-mp3 cannot read 8 kHz
# (MPEG-2.5) files. After running this, copy the files into
# cmd/internal/prompt/mp3/ (the binary embeds that copy); a test there fails
# if the two copies differ. See README.md.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

speak() { # name voice pitch speed text
	espeak-ng -v "$2" -p "$3" -s "$4" -w "$tmp/$1.wav" "$5"
	# 22.05 kHz mono, peak-normalised to -3 dBFS, 200 ms of silence trimmed
	# off neither end: the harness loops the prompt as a continuous talker.
	sox "$tmp/$1.wav" -r 22050 -c 1 -b 16 "$tmp/$1-22k.wav" norm -3
	lame --quiet --noreplaygain -m m -b 48 --resample 22.05 "$tmp/$1-22k.wav" "$1.mp3"
}

speak agent en-us 35 165 \
	"Thank you for calling. My name is Alex, and I will be helping you today. \
Can I have your account number, please? Thank you. I can see your order here. \
It shipped on Tuesday and should arrive by Friday."

speak customer en-gb+f3 70 175 \
	"Hello, yes. I ordered a pair of headphones last week and they have not \
arrived yet. My account number is four seven one nine two. \
Could you tell me where my parcel is? That is great, thank you very much."

# Keep the embedded copy identical.
cp agent.mp3 customer.mp3 ../../cmd/internal/prompt/mp3/
ls -l agent.mp3 customer.mp3
