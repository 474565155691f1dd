# A dynamically linked C++ program (glibc, libstdc++) in a small final image: built and stripped by binslim in
# the builder stage, then copied alone onto debian:bookworm-slim, which already holds the shared libraries it
# loads (libc6, libstdc++6, libgcc-s1) and nothing of the builder: no compiler, no Python, no binslim.
# Build from the root of a binslim checkout (the program is testdata/cxx/hello.cpp):
#
#   docker build -f examples/cxx.Dockerfile -t hello-cxx-slim .
#   docker run --rm hello-cxx-slim --version
#
# The build arguments BINSLIM_PIP_SPEC and BINSLIM_ARGS work as in examples/Dockerfile.

FROM debian:bookworm-slim AS builder
COPY examples/slim-app.sh /usr/local/bin/
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ libc6-dev python3-venv \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY testdata/cxx/hello.cpp ./
# Debug information in, as a real build often has it: binslim takes it out below.
RUN g++ -g -O2 -o /usr/local/bin/app hello.cpp

# binslim runs in the builder stage: a strip in the final stage would only hide the old bytes under a new
# layer. The report, with its verification, is in the build output; a failed verification fails the build.
COPY pyproject.toml README.md /binslim-src/
COPY binslim/ /binslim-src/binslim/
ARG BINSLIM_PIP_SPEC=/binslim-src
ARG BINSLIM_ARGS=
RUN slim-app.sh /usr/local/bin/app /app $BINSLIM_ARGS

# The same base as the builder, so the libraries the program was linked against are the ones it loads.
FROM debian:bookworm-slim
COPY --from=builder /app /usr/local/bin/app
ENTRYPOINT ["/usr/local/bin/app"]
