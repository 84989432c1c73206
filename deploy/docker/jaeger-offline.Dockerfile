# A stand-in for the official jaegertracing/jaeger image, for machines that
# cannot pull images (the end-to-end tests build it): bin/jaeger, built from
# source by `make tools` with CGO_ENABLED=0, with deploy/local/jaeger.yaml
# (all-in-one, in-memory) listening on every interface. Same ports as the
# official image: OTLP 4317/4318, query API 16686. Its web UI is a
# placeholder; the query API is complete.
FROM scratch
COPY jaeger /jaeger
COPY jaeger.yaml /etc/jaeger/config.yaml
COPY --chown=65534:65534 tmp /tmp
ENV JAEGER_LISTEN_HOST=0.0.0.0
USER 65534:65534
EXPOSE 4317 4318 16686
ENTRYPOINT ["/jaeger", "--config", "/etc/jaeger/config.yaml"]
