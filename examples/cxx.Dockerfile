# A dynamically linked C++ program (glibc, libstdc++) in a `FROM scratch` image: built in a builder stage, then
# `binslim bundle` writes the smallest root it runs in (the program, its loader and the shared libraries it
# needs, each cut to what the loader maps), runs it inside that root and compares it with the original. Only
# that root is copied into the final stage: no shell, no package manager, no compiler, no Python.
# Build from the root of a binslim checkout (the program is testdata/cxx/hello.cpp):
#
#   docker build -f examples/cxx.Dockerfile -t hello-cxx-slim .
#   docker run --rm hello-cxx-slim --version
#
# The build arguments BINSLIM_PIP_SPEC and BINSLIM_ARGS work as in examples/Dockerfile (BINSLIM_ARGS goes to
# binslim bundle here, e.g. --build-arg BINSLIM_ARGS="--with certs,tz").

FROM debian:bookworm-slim AS builder
COPY examples/slim-app.sh /usr/local/bin/
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ libc6-dev python3-venv \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY testdata/cxx/hello.cpp ./
# Debug information in, as a real build often has it: the bundle leaves it out.
RUN g++ -g -O2 -o /usr/local/bin/hello-cxx hello.cpp

# binslim runs in the builder stage: a strip in the final stage would only hide the old bytes under a new
# layer. The report, with its verification inside the root, is in the build output; a program that does not
# behave inside the root as on the host makes binslim exit 3, and that fails the build.
COPY pyproject.toml README.md /binslim-src/
COPY binslim/ /binslim-src/binslim/
ARG BINSLIM_PIP_SPEC=/binslim-src
ARG BINSLIM_ARGS=
RUN slim-app.sh bundle /usr/local/bin/hello-cxx -o /rootfs $BINSLIM_ARGS

FROM scratch
COPY --from=builder /rootfs/ /
ENTRYPOINT ["/usr/local/bin/hello-cxx"]
