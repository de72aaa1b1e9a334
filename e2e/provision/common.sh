# Shared helpers for e2e/provision/* (sourced, not executed).
PROVISION_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions
. "$PROVISION_DIR/versions"
FJORD_CACHE="${FJORD_CACHE:-$HOME/.cache/fjord}"
mkdir -p "$FJORD_CACHE"
log() { printf '[provision] %s\n' "$*" >&2; }
