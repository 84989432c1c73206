# The hello backend on Nomad, Docker driver: three instances that register
# themselves with the Consul agent of the node they land on (no Nomad
# `service` block: the hello's Registrar does it, with the HTTP check, and
# deregisters and drains on SIGTERM).
#
#   nomad job run -var hello_image=registry.example.com/hopgate/hello:1.0 hello.nomad.hcl
#
# Host networking: the hello listens on the port Nomad allocates on the host
# and detects its address toward the local agent, i.e. the host's address,
# which is where gateways on other hosts reach it.

variable "hello_image" {
  type        = string
  default     = "hopgate/hello:dev"
  description = "hello image (make images builds hopgate/hello:dev)"
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "count" {
  type    = number
  default = 3
}

variable "otlp_endpoint" {
  type        = string
  default     = ""
  description = "OTLP/HTTP endpoint for spans, e.g. http://jaeger.service.consul:4318; empty: no export"
}

job "hello" {
  datacenters = var.datacenters
  type        = "service"

  # One instance at a time: the old one deregisters and drains while the new
  # one's check must pass for min_healthy_time.
  update {
    max_parallel      = 1
    min_healthy_time  = "10s"
    healthy_deadline  = "2m"
    progress_deadline = "5m"
    auto_revert       = true
  }

  group "hello" {
    count = var.count

    network {
      port "http" {}
    }

    restart {
      attempts = 3
      interval = "5m"
      delay    = "5s"
      mode     = "delay"
    }

    task "hello" {
      driver = "docker"

      # SIGTERM, then up to kill_timeout before SIGKILL: longer than the
      # drain (3s) plus in-flight requests finishing.
      kill_signal  = "SIGTERM"
      kill_timeout = "15s"

      config {
        image        = var.hello_image
        network_mode = "host"
        args         = ["-listen", ":${NOMAD_PORT_http}", "-drain", "3s"]
      }

      env {
        # The Consul agent on this node.
        CONSUL_HTTP_ADDR            = "${attr.unique.network.ip-address}:8500"
        OTEL_EXPORTER_OTLP_ENDPOINT = var.otlp_endpoint
      }

      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}
