# The hello backend on Nomad without Docker: the raw_exec driver runs the
# static binary installed on each client (bin/hello from `make build`,
# copied to hello_binary). Everything else as in hello.nomad.hcl. raw_exec
# must be enabled in the client's plugin configuration.

variable "hello_binary" {
  type    = string
  default = "/usr/local/bin/hello"
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
  type    = string
  default = ""
}

job "hello" {
  datacenters = var.datacenters
  type        = "service"

  update {
    max_parallel      = 1
    min_healthy_time  = "10s"
    healthy_deadline  = "2m"
    progress_deadline = "5m"
    auto_revert       = true
  }

  group "hello" {
    count = var.count

    constraint {
      attribute = "${attr.kernel.name}"
      value     = "linux"
    }

    constraint {
      attribute = "${attr.driver.raw_exec}"
      value     = "1"
    }

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
      driver       = "raw_exec"
      kill_signal  = "SIGTERM"
      kill_timeout = "15s"

      config {
        command = var.hello_binary
        args    = ["-listen", ":${NOMAD_PORT_http}", "-drain", "3s"]
      }

      env {
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
