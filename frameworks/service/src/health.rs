//! Health checks: the spec's check as the agent's
//! ([`mezzo_sdk::HealthCheck`]), run by the agent of each instance from
//! inside its container and network namespace. The verdict comes back on
//! the instance's status updates (`healthy`), where the owner reads it.
//!
//! Why the agent and not the framework: the framework's cost then does not
//! grow with every instance, and a check sees the instance from inside, so
//! it works for instances with a network of their own too. A command check
//! runs in the instance's container with its environment (`HOST`,
//! `PORT0`...), e.g. `curl -fs http://127.0.0.1:$PORT0/`.

use mezzo_sdk::HealthCheck;

use crate::spec::{Probe, ServiceSpec};

/// The agent's check for an instance of `spec` that got `ports` (in the
/// spec's order); `None` without a check, or without the port it names.
pub fn agent_check(spec: &ServiceSpec, ports: &[u64]) -> Option<HealthCheck> {
    let h = spec.health.as_ref()?;
    let port = |i: usize| ports.get(i).and_then(|p| u16::try_from(*p).ok());
    let check = match spec.probe().ok()?? {
        Probe::Http { port: i, path } => HealthCheck::http(port(i)?, path),
        Probe::Tcp { port: i } => HealthCheck::tcp(port(i)?),
        Probe::Command(script) => HealthCheck::shell(script),
    };
    Some(
        check
            .grace_period(h.grace_period)
            .interval(h.interval)
            .timeout(h.timeout)
            .failures(h.failures),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_s_check_names_the_instance_s_port_and_timing() {
        let spec = ServiceSpec::parse(
            "name = \"w\"\ninstances = 1\ncommand = \"x\"\nresources = \"cpus:1\"\nports = [\"http\", \"admin\"]\n\
             [health]\nhttp = { port = \"admin\", path = \"/ok\" }\ninterval = \"2s\"\nfailures = 4\n",
        )
        .expect("spec");
        let c = agent_check(&spec, &[31000, 31001]).expect("a check").build();
        let http = c.http.expect("http");
        assert_eq!((http.port, http.path.as_str()), (31001, "/ok"));
        assert_eq!((c.interval_secs, c.consecutive_failures), (Some(2.0), Some(4)));
        assert!(agent_check(&spec, &[31000]).is_none(), "no port, no check");
        let cmd = ServiceSpec::parse(
            "name = \"w\"\ninstances = 1\ncommand = \"x\"\nresources = \"cpus:1\"\n[health]\ncommand = \"test -f ok\"\n",
        )
        .expect("spec");
        let c = agent_check(&cmd, &[]).expect("a check").build();
        assert_eq!(c.command.map(|c| (c.value, c.shell)), Some(("test -f ok".into(), true)));
    }
}
