"""devstack/moto_tuning.py's SQS fix (4) keeps moto's answers: the queue's counts and
what ReceiveMessage hands out, for messages visible, in flight and delayed."""

from __future__ import annotations

import secrets

import boto3


def test_queue_counts_and_receives_are_moto_s_own(local_stack):
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName=f"tuning-{secrets.token_hex(4)}")["QueueUrl"]
    try:
        # GIVEN three messages: one delayed, two visible, of which one is then received (in flight)
        sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=600)
        sqs.send_message(QueueUrl=url, MessageBody="one")
        sqs.send_message(QueueUrl=url, MessageBody="two")
        (taken,) = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=600)["Messages"]
        # THEN each count holds one, as moto's own counts say
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
        assert attributes == dict.fromkeys(names, "1")
        assert (
            sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]["MessageRetentionPeriod"]
            == "345600"
        )
        # AND the one visible message is the only one handed out (within its retention period)
        (rest,) = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
        assert {taken["Body"], rest["Body"]} == {"one", "two"}
        assert sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []) == []
    finally:
        sqs.delete_queue(QueueUrl=url)
