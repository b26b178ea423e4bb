#!/usr/bin/env bash
# Check the system packages `make test` and `make demo` need, before anything else runs.
#   scripts/prerequisites.sh test|demo|demo-learning   say what is missing and how to install
#                                          it; exit 1 if so
#   scripts/prerequisites.sh --packages    print only the missing Debian packages (for .ci/run)
# The Google Cloud CLI packages come from Google's apt repository
# (https://cloud.google.com/sdk/docs/install#deb); everything else is in Debian.
set -uo pipefail

target="${1:-test}"
missing=()   # Debian packages
reasons=()   # what each one is for

need() { missing+=("$1"); reasons+=("$1: $2"); }

if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  need python3 "Python 3.11 or newer (found: $(python3 --version 2>&1 || echo none))"
elif ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  need python3-venv "the venv module, to create .venv"
fi

if ! command -v java >/dev/null || ! java -version 2>&1 | grep -Eq 'version "(1[7-9]|[2-9][0-9])'; then
  need openjdk-17-jre-headless "Java 17+, which the Pub/Sub and Firestore emulators run on"
fi

sdk_root=""
if command -v gcloud >/dev/null; then
  sdk_root="$(CLOUDSDK_CORE_DISABLE_PROMPTS=1 gcloud info --format='value(installation.sdk_root)' 2>/dev/null)"
fi
if [ -z "$sdk_root" ]; then
  need google-cloud-cli "the Google Cloud CLI (gcloud)"
fi
if [ -z "$sdk_root" ] || [ ! -x "$sdk_root/platform/pubsub-emulator/bin/cloud-pubsub-emulator" ]; then
  need google-cloud-cli-pubsub-emulator "the Pub/Sub emulator (or: gcloud components install pubsub-emulator)"
fi
if [ -z "$sdk_root" ] || [ ! -x "$sdk_root/platform/cloud-firestore-emulator/cloud_firestore_emulator" ]; then
  need google-cloud-cli-firestore-emulator "the Firestore emulator (or: gcloud components install cloud-firestore-emulator)"
fi

# What each target needs beyond the stack: the tests start Prometheus and Chromium; the tests
# and `make demo-learning` speak the learning loop's diaries with espeak-ng and sox.
case "$target" in
  demo) test_servers=0; speech=0 ;;
  demo-learning) test_servers=0; speech=1 ;;
  *) test_servers=1; speech=1 ;;
esac
if [ "$test_servers" = 1 ] && ! command -v prometheus >/dev/null; then
  need prometheus "Prometheus, which the observability test starts on a free port"
fi
if [ "$test_servers" = 1 ] && ! command -v chromium >/dev/null; then
  need chromium "Chromium, in which the web page test runs (headless)"
fi
if [ "$test_servers" = 1 ] && ! command -v chromedriver >/dev/null; then
  need chromium-driver "chromedriver, through which Selenium drives Chromium"
fi
if [ "$speech" = 1 ] && ! command -v espeak-ng >/dev/null; then
  need espeak-ng "espeak-ng, which speaks the learning loop's diary entries"
fi
if [ "$speech" = 1 ] && ! command -v sox >/dev/null; then
  need sox "sox, which resamples that speech to 16 kHz"
fi

if [ "$target" = --packages ]; then
  [ ${#missing[@]} -eq 0 ] || printf '%s\n' "${missing[@]}"
  exit 0
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "make $target needs system packages that are missing:" >&2
  printf '  - %s\n' "${reasons[@]}" >&2
  echo "install them with:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
