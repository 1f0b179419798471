# Where scripts/setup installs the tools the tests start themselves, and
# their versions; sourced by scripts/setup and scripts/test.

# moto, an S3-compatible server from PyPI, for the object storage tests.
MOTO_VERSION=5.2.1
MOTO_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/ferry/moto-$MOTO_VERSION"
MOTO_SERVER="$MOTO_DIR/bin/moto_server"
