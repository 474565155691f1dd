# The image-size story: one Go web service (testdata/go/webservice) in four images, from the naive one to the
# smallest. benchmarks/docker_story.py builds each target and measures it; the README shows its table.
#
#   docker build -f examples/go-service.Dockerfile --target single     -t webservice:single .
#   docker build -f examples/go-service.Dockerfile --target multistage -t webservice:multistage .
#   docker build -f examples/go-service.Dockerfile --target stripped   -t webservice:stripped .
#   docker build -f examples/go-service.Dockerfile --target packed     -t webservice:packed .
#   docker run --rm -p 8080:8080 webservice:packed

# 1. Single stage: the program and the whole Go toolchain it was built with.
FROM golang:1.23-bookworm AS single
WORKDIR /src
COPY testdata/go/webservice/ ./
RUN CGO_ENABLED=0 go build -trimpath -o /usr/local/bin/webservice .
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/webservice"]

# The slimming happens in a builder stage; only its results are copied into the small images below. Its
# first lines are examples/Dockerfile's, so the two builds share that layer.
FROM golang:1.23-bookworm AS slimming
COPY examples/enable-backports.sh examples/slim-app.sh /usr/local/bin/
RUN enable-backports.sh \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && apt-get install -y --no-install-recommends -t bookworm-backports upx-ucl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=single /usr/local/bin/webservice /usr/local/bin/webservice
COPY pyproject.toml README.md /binslim-src/
COPY binslim/ /binslim-src/binslim/
ARG BINSLIM_PIP_SPEC=/binslim-src
# The JSON reports (sizes, and the startup each result adds) are what benchmarks/docker_story.py reads.
RUN mkdir /out \
 && slim-app.sh /usr/local/bin/webservice /out/stripped --json > /out/stripped.json \
 && slim-app.sh /usr/local/bin/webservice /out/packed --upx --json > /out/packed.json \
 && cat /out/stripped.json /out/packed.json

# 2. Multi-stage: the same binary alone in an empty image. (Not named "scratch": a stage of that name would
# shadow the empty image in the FROM lines below, and each later image would stack its file over this one's.)
FROM scratch AS multistage
COPY --from=single /usr/local/bin/webservice /webservice
EXPOSE 8080
ENTRYPOINT ["/webservice"]

# 3. Multi-stage, stripped by binslim.
FROM scratch AS stripped
COPY --from=slimming /out/stripped /webservice
EXPOSE 8080
ENTRYPOINT ["/webservice"]

# 4. Multi-stage, stripped and packed with UPX by binslim.
FROM scratch AS packed
COPY --from=slimming /out/packed /webservice
EXPOSE 8080
ENTRYPOINT ["/webservice"]
