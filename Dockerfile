# Build: docker build -t videoworker .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/videoworker ./cmd/videoworker

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/videoworker /usr/local/bin/videoworker
ENTRYPOINT ["/usr/local/bin/videoworker"]
