//! The task of one instance: the spec's command through the shell, its
//! resources and ports, and the ports in the environment.

use mezzo_sdk::TaskBuilder;
use mezzo_sdk::controller::Task;

use crate::spec::ServiceSpec;

/// Completes the controller's `builder` (id, resources with ports,
/// version label) with the instance's command and environment; `task`
/// says where it goes and which ports it got.
pub(super) fn build(builder: TaskBuilder, spec: &ServiceSpec, task: &Task) -> TaskBuilder {
    let mut b = builder
        .name(&spec.name)
        .shell(&spec.command)
        .kill_grace(spec.kill_grace)
        .label("mezzo.service", &spec.name)
        .env("HOST", &task.location.hostname)
        .env("MEZZO_SERVICE", &spec.name);
    for (k, v) in &spec.env {
        b = b.env(k, v);
    }
    if let Some(image) = &spec.image {
        b = b.image(image);
    }
    if let Some(secret) = &spec.image_credentials {
        b = b.image_credentials(secret);
    }
    for (i, (name, port)) in spec.ports.iter().zip(&task.ports).enumerate() {
        b = b
            .env(format!("PORT{i}"), port.to_string())
            .env(format!("MEZZO_PORT_{}", name.to_ascii_uppercase()), port.to_string());
    }
    if let Some(p) = task.ports.first() {
        b = b.env("PORT", p.to_string());
    }
    if let (Some(v), Some(i)) = (&spec.volume, super::state::ordinal_of(task)) {
        b = b.env("MEZZO_INSTANCE", i.to_string()).env("MEZZO_VOLUME_PATH", &v.path);
    }
    if let Some(check) = crate::health::agent_check(spec, &task.ports) {
        b = b.health_check(check);
    }
    b
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mezzo_sdk::offers::Location;
    use mezzo_sdk::{Resources, TaskState};

    use super::*;

    #[test]
    fn tasks_carry_ports_env_and_labels() {
        let spec = ServiceSpec::parse(
            "name = \"web\"\ninstances = 1\ncommand = \"run\"\nresources = \"cpus:0.1\"\nports = [\"http\", \"admin\"]\n[env]\nA = \"1\"\n",
        )
        .expect("spec");
        let task = Task {
            id: "web.3.x".into(),
            key: "web".into(),
            state: TaskState::Staging,
            status: None,
            location: Location {
                agent_id: "a".into(),
                hostname: "h".into(),
                attributes: vec![],
            },
            ports: vec![31000, 31001],
            labels: BTreeMap::new(),
            launched: None,
            killing: false,
            adopted: false,
        };
        let res = Resources::parse("cpus:0.1;ports:[31000-31001]").expect("res");
        let t = build(TaskBuilder::new("web.3.x").resources(&res), &spec, &task).build();
        let cmd = t.command.expect("command");
        let env: BTreeMap<_, _> = cmd
            .environment
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(env["PORT0"], "31000");
        assert_eq!(env["PORT1"], "31001");
        assert_eq!(env["PORT"], "31000");
        assert_eq!(env["MEZZO_PORT_ADMIN"], "31001");
        assert_eq!(env["A"], "1");
        assert_eq!(env["HOST"], "h");
    }
}
