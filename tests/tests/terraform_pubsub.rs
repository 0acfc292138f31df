//! Holds `terraform/`'s Pub/Sub to what `jobtrace provision` creates on the emulator,
//! which the integration tests run against: the same topics, subscriptions, ordering,
//! dead-lettering, ack deadline and push path.

use job_trace_tests::hcl::{attribute, source, Expression, Terraform};

#[test]
fn jobtrace_provisions_the_topics_and_subscriptions_terraform_declares() {
    use jobtrace::topology::*;
    let terraform = Terraform::load();
    assert_eq!(terraform.string_default("scrape_jobs_topic"), JOBS_TOPIC);
    assert_eq!(terraform.string_default("events_topic"), EVENTS_TOPIC);
    assert_eq!(
        terraform.string_default("dead_letter_topic"),
        DEAD_LETTER_TOPIC
    );
    assert_eq!(
        terraform.string_default("completions_topic"),
        COMPLETIONS_TOPIC
    );
    assert_eq!(
        terraform.number_default("max_delivery_attempts"),
        i64::from(MAX_DELIVERY_ATTEMPTS)
    );
    assert_eq!(
        terraform.number_default("ack_deadline_seconds"),
        i64::from(ACK_DEADLINE_SECONDS)
    );

    let subscriptions = terraform.resources("google_pubsub_subscription");
    let hold = subscriptions
        .iter()
        .find(|(_, block)| source(block.body(), "topic").contains("dead_letter"))
        .expect("a subscription holding dead letters");
    assert_eq!(
        source(hold.1.body(), "name"),
        format!(
            "\"${{var.dead_letter_topic}}{}\"",
            &DEAD_LETTER_HOLD[DEAD_LETTER_TOPIC.len()..]
        ),
        "{}",
        hold.0
    );

    let pushing: Vec<_> = subscriptions
        .iter()
        .filter(|(_, block)| {
            block
                .body()
                .blocks()
                .any(|b| b.identifier() == "push_config")
        })
        .collect();
    assert_eq!(
        pushing.len(),
        PUSH_SUBSCRIPTIONS.len(),
        "push subscriptions"
    );
    for planned in PUSH_SUBSCRIPTIONS {
        let (resource, block) = pushing
            .iter()
            .find(|(_, block)| source(block.body(), "name") == format!("\"{}\"", planned.name))
            .unwrap_or_else(|| panic!("terraform has no push subscription {}", planned.name));
        let body = block.body();
        let topic = source(body, "topic");
        let topic_variable = if planned.topic == JOBS_TOPIC {
            "scrape_jobs"
        } else {
            "events"
        };
        assert!(topic.contains(topic_variable), "{resource}: topic {topic}");
        let ordered = matches!(
            attribute(body, "enable_message_ordering"),
            Some(Expression::Bool(true))
        );
        assert_eq!(ordered, planned.ordering, "{resource}: message ordering");
        assert_eq!(
            source(body, "ack_deadline_seconds"),
            "var.ack_deadline_seconds"
        );
        let push = body
            .blocks()
            .find(|b| b.identifier() == "push_config")
            .unwrap();
        let endpoint = source(push.body(), "push_endpoint");
        assert!(
            endpoint.ends_with(&format!("}}{PUSH_PATH}\"")),
            "{resource}: push endpoint {endpoint} does not end in {PUSH_PATH}"
        );
        let dead_letter = body
            .blocks()
            .find(|b| b.identifier() == "dead_letter_policy")
            .unwrap_or_else(|| panic!("{resource}: no dead_letter_policy"));
        assert_eq!(
            source(dead_letter.body(), "max_delivery_attempts"),
            "var.max_delivery_attempts"
        );
        assert!(source(dead_letter.body(), "dead_letter_topic").contains("dead_letter"));
    }
}

/// trace-writer's own identity, and only it, publishes completion notifications.
#[test]
fn trace_writer_may_publish_completions() {
    let terraform = Terraform::load();
    let topic = terraform.resource("google_pubsub_topic", "completions");
    assert_eq!(source(topic.body(), "name"), "var.completions_topic");
    let publishers: Vec<_> = terraform
        .resources("google_pubsub_topic_iam_member")
        .into_iter()
        .filter(|(_, block)| {
            source(block.body(), "topic").contains("google_pubsub_topic.completions")
                && source(block.body(), "role") == "\"roles/pubsub.publisher\""
        })
        .collect();
    assert_eq!(publishers.len(), 1, "one publisher binding on the topic");
    let member = source(publishers[0].1.body(), "member");
    assert!(
        member.contains("google_service_account.trace_writer.email"),
        "the publisher is trace-writer's runtime account, not {member}"
    );
}
