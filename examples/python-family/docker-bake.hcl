# The Python family: a runtime base, a dev variant with compilers and headers, and an app whose
# wheel (a C extension, compiled from its PyPI sdist in dev) is installed into the base. Each
# on two Debian releases: bookworm (Python 3.11) and trixie (Python 3.13).
#
#   kiln bake -f examples/python-family/docker-bake.hcl          (from the repository root)
#   (the file is in docker buildx bake's format; kiln reads it as buildx resolves it)
#
# Paths are relative to the directory bake runs in, as buildx has them.

variable "DIR" {
  default = "examples/python-family"
}

# The CA bundle pip trusts, handed to the wheel build as a secret (never a layer): on a network
# whose proxy re-signs HTTPS, this is the host's bundle, which holds the proxy's CA.
variable "CA_CERT" {
  default = "/etc/ssl/certs/ca-certificates.crt"
}

variable "RELEASES" {
  default = ["bookworm", "trixie"]
}

group "default" {
  targets = ["base", "dev", "app"]
}

target "base" {
  name       = "base-${release}"
  matrix     = { release = RELEASES }
  context    = "${DIR}/base"
  args       = { RELEASE = release }
  tags       = ["python-family/base:${release}"]
}

target "dev" {
  name       = "dev-${release}"
  matrix     = { release = RELEASES }
  context    = "${DIR}/dev"
  contexts   = { base = "target:base-${release}" }
  tags       = ["python-family/dev:${release}"]
}

target "app" {
  name       = "app-${release}"
  matrix     = { release = RELEASES }
  context    = "${DIR}/app"
  contexts   = {
    base = "target:base-${release}"
    dev  = "target:dev-${release}"
  }
  args       = { MARKUPSAFE_VERSION = "3.0.2" }
  secret     = ["id=ca,src=${CA_CERT}"]
  tags       = ["python-family/app:${release}"]
}
