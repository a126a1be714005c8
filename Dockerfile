# Build: docker build -t videoworker .
# Tags are exact versions (the distroless image has no version tag finer
# than its Debian release). cmd/videoworker's TestDockerBuild runs this go
# build line on the context .dockerignore leaves, without Docker.
FROM golang:1.26.8 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/videoworker ./cmd/videoworker

# A static binary on a base without shell: container health checks run
# `videoworker healthcheck URL`.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/videoworker /usr/local/bin/videoworker
ENTRYPOINT ["/usr/local/bin/videoworker"]
