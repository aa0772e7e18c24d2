# syntax=docker/dockerfile:1
# A static audgate binary on distroless, running as nonroot.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=""
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/audgate ./cmd/audgate

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/audgate /usr/local/bin/audgate
USER nonroot:nonroot
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/audgate"]
CMD ["run", "--config", "/etc/audgate/audgate.yaml"]
