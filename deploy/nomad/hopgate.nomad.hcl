# The hopgate gateway on Nomad, Docker driver: a system job, one gateway on
# every client node, on static ports 8080 (traffic) and 9901 (admin, bound
# to loopback). Each gateway follows the Consul agent of its node.

variable "hopgate_image" {
  type    = string
  default = "hopgate/gateway:dev"
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "otlp_endpoint" {
  type    = string
  default = ""
}

job "hopgate" {
  datacenters = var.datacenters
  type        = "system"

  update {
    max_parallel = 1
    stagger      = "30s"
  }

  group "gateway" {
    network {
      port "http" {
        static = 8080
      }
      port "admin" {
        static = 9901
      }
    }

    restart {
      attempts = 5
      interval = "5m"
      delay    = "5s"
      mode     = "delay"
    }

    task "hopgate" {
      driver = "docker"

      # In-flight requests get -shutdown-timeout (15s) on SIGTERM.
      kill_signal  = "SIGTERM"
      kill_timeout = "20s"

      config {
        image        = var.hopgate_image
        network_mode = "host"
        args         = ["-listen", ":${NOMAD_PORT_http}", "-admin", "127.0.0.1:${NOMAD_PORT_admin}"]
      }

      env {
        CONSUL_HTTP_ADDR            = "${attr.unique.network.ip-address}:8500"
        OTEL_EXPORTER_OTLP_ENDPOINT = var.otlp_endpoint
      }

      resources {
        cpu    = 500
        memory = 128
      }
    }
  }
}
