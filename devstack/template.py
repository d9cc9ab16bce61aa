"""template.yaml, read the way the local stack needs it.

Three parts, all driven by the template alone (there is no second list of resources):

- a YAML loader that turns CloudFormation's short-form tags into their long form
  (``!Ref X`` -> ``{"Ref": "X"}``, ``!GetAtt A.B`` -> ``{"Fn::GetAtt": ["A", "B"]}``);
- :class:`Resolver`, a small evaluator of intrinsic functions for local use
  (see :mod:`devstack.intrinsics`);
- the resources the local stack emulates and the functions it runs in-process.

CloudFormation short-form syntax and the intrinsic functions are documented in the
CloudFormation User Guide, "Intrinsic function reference"; SAM's ``Globals`` section in
the SAM Developer Guide, "Globals section of the AWS SAM template".
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devstack.intrinsics import Resolver, TemplateError, references

log = logging.getLogger(__name__)

__all__ = [
    "BUCKET",
    "EMULATED_TYPES",
    "EVENT_BUS",
    "QUEUE",
    "TABLE",
    "FunctionSpec",
    "Resolver",
    "Template",
    "TemplateError",
    "create_resources",
    "emulated_resources",
    "function_specs",
    "load_template",
]

BUCKET = "AWS::S3::Bucket"
TABLE = "AWS::DynamoDB::Table"
QUEUE = "AWS::SQS::Queue"
EVENT_BUS = "AWS::Events::EventBus"
#: The resource types the local stack creates on the emulated AWS; the rest of the
#: template (IAM, ECS, load balancer, logs) has no local meaning.
EMULATED_TYPES = (BUCKET, TABLE, QUEUE, EVENT_BUS)
SERVERLESS_FUNCTION = "AWS::Serverless::Function"


# -- loading -----------------------------------------------------------------------

#: Short-form tag -> long-form key. ``!Ref`` and ``!Condition`` are not ``Fn::``.
_TAGS = {
    "Ref": "Ref",
    "Condition": "Condition",
    **{
        name: f"Fn::{name}"
        for name in (
            "Sub", "If", "Equals", "Not", "And", "Or", "Select", "Join", "Split", "FindInMap",
            "GetAZs", "Base64", "ImportValue", "Cidr", "GetAtt", "Length", "ToJsonString",
        )
    },
}


class _Loader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML has no type stubs here
    """SafeLoader plus the short-form tags; timestamps stay strings, as in CloudFormation."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _short_form(key: str) -> Callable[[_Loader, yaml.Node], dict[str, Any]]:
    def construct(loader: _Loader, node: yaml.Node) -> dict[str, Any]:
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        if key == "Fn::GetAtt" and isinstance(value, str):
            # "!GetAtt A.B.C" is ["A", "B.C"]: the attribute may itself contain dots.
            value = value.split(".", 1)
        return {key: value}

    return construct


for _tag, _key in _TAGS.items():
    _Loader.add_constructor(f"!{_tag}", _short_form(_key))


class Template(dict[str, Any]):
    """A parsed template: the document itself, plus the file it came from."""

    def __init__(self, body: Mapping[str, Any], path: Path) -> None:
        super().__init__(body)
        self.path = path

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return dict(self.get("Resources") or {})


def load_template(path: str | Path) -> Template:
    path = Path(path).resolve()
    body = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # a SafeLoader, plus tags
    if not isinstance(body, dict) or not isinstance(body.get("Resources"), dict):
        raise TemplateError(f"{path}: not a CloudFormation template (no Resources)")
    return Template(body, path)


def _default_resolver(template: Template, resolver: Resolver | None) -> Resolver:
    return resolver if resolver is not None else Resolver(template)


# -- emulated resources ------------------------------------------------------------


def emulated_resources(template: Mapping[str, Any]) -> list[str]:
    """Logical IDs of the resources the local stack creates, in template order."""
    return [rid for rid, res in (template.get("Resources") or {}).items() if res.get("Type") in EMULATED_TYPES]


def creation_order(template: Mapping[str, Any]) -> list[str]:
    """Emulated resources, each after those it refers to (``Ref``, ``GetAtt``, ``Sub``, ``DependsOn``)."""
    resources = template.get("Resources") or {}
    wanted = emulated_resources(template)
    order: list[str] = []
    visiting: set[str] = set()

    def visit(rid: str) -> None:
        if rid in order:
            return
        if rid in visiting:
            raise TemplateError(f"circular dependency through {rid}")
        visiting.add(rid)
        resource = resources[rid]
        depends_on = resource.get("DependsOn") or []
        depends_on = [depends_on] if isinstance(depends_on, str) else depends_on
        for dep in sorted(references(resource.get("Properties", {})) | set(depends_on)):
            if dep in wanted:
                visit(dep)
        visiting.discard(rid)
        order.append(rid)

    for rid in wanted:
        visit(rid)
    return order


def _client(clients: Any, service: str) -> Any:
    """A client from a boto3 Session (``.client``) or a ``mailcore.aws.Clients`` (``.get``)."""
    if hasattr(clients, "client"):
        return clients.client(service)
    return clients.get(service)


def create_resources(template: Template, clients: Any, resolver: Resolver | None = None) -> dict[str, str]:
    """Create every emulated resource from its Properties: ``{logical_id: name or queue URL}``.

    ``clients`` is a boto3 Session or a :class:`mailcore.aws.Clients` pointing at the
    emulated AWS. Creating what already exists is not an error (the call is idempotent).
    """
    resolver = _default_resolver(template, resolver)
    client = functools.partial(_client, clients)
    created: dict[str, str] = {}
    for rid in creation_order(template):
        resource = template.resources[rid]
        properties = resolver.resolve(resource.get("Properties") or {})
        name = resolver.physical_name(rid)
        created[rid] = _CREATORS[resource["Type"]](client, name, properties)
        resolver.physical[rid] = created[rid]
        log.debug("created %s %s: %s", resource["Type"], rid, created[rid])
    return created


def _create_bucket(client: Callable[[str], Any], name: str, props: dict[str, Any]) -> str:
    """S3: the bucket, then the configuration moto keeps (encryption, lifecycle, access)."""
    s3 = client("s3")
    region = s3.meta.region_name
    kwargs: dict[str, Any] = {"Bucket": name}
    if region != "us-east-1":  # us-east-1 takes no LocationConstraint (S3 API CreateBucket)
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(**kwargs)
    if "BucketEncryption" in props:
        rules = [
            {
                "ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"],
                **({"BucketKeyEnabled": rule["BucketKeyEnabled"]} if "BucketKeyEnabled" in rule else {}),
            }
            for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        ]
        s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
    if "PublicAccessBlockConfiguration" in props:
        s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"])
    if "OwnershipControls" in props:
        s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls=props["OwnershipControls"])
    if "VersioningConfiguration" in props:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration=props["VersioningConfiguration"])
    if "LifecycleConfiguration" in props:
        rules = [_lifecycle_rule(rule) for rule in props["LifecycleConfiguration"]["Rules"]]
        s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": rules})
    return name


def _lifecycle_rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    """AWS::S3::Bucket Rule (CloudFormation shape) -> PutBucketLifecycleConfiguration Rule."""
    out: dict[str, Any] = {"Status": rule["Status"], "Filter": {}}
    if "Id" in rule:
        out["ID"] = rule["Id"]
    if "Prefix" in rule:
        out["Filter"] = {"Prefix": rule["Prefix"]}
    if "ExpirationInDays" in rule:
        out["Expiration"] = {"Days": rule["ExpirationInDays"]}
    if "AbortIncompleteMultipartUpload" in rule:
        out["AbortIncompleteMultipartUpload"] = rule["AbortIncompleteMultipartUpload"]
    if "NoncurrentVersionExpirationInDays" in rule:
        out["NoncurrentVersionExpiration"] = {"NoncurrentDays": rule["NoncurrentVersionExpirationInDays"]}
    return out


def _create_table(client: Callable[[str], Any], name: str, props: dict[str, Any]) -> str:
    """DynamoDB: keys, indexes, billing and streams at creation; TTL and PITR after it."""
    ddb = client("dynamodb")
    kwargs: dict[str, Any] = {
        "TableName": name,
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": props.get("BillingMode", "PROVISIONED"),
    }
    for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes", "ProvisionedThroughput", "TableClass"):
        if key in props:
            kwargs[key] = props[key]
    if "StreamSpecification" in props:
        kwargs["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
    if "SSESpecification" in props:
        sse = dict(props["SSESpecification"])
        kwargs["SSESpecification"] = {"Enabled": sse.pop("SSEEnabled", False), **sse}
    try:
        ddb.create_table(**kwargs)
    except ddb.exceptions.ResourceInUseException:
        return name
    ttl = props.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
    pitr = props.get("PointInTimeRecoverySpecification")
    if pitr and pitr.get("PointInTimeRecoveryEnabled"):
        ddb.update_continuous_backups(TableName=name, PointInTimeRecoverySpecification=pitr)
    return name


#: AWS::SQS::Queue properties that are queue attributes of the same name (SQS API
#: CreateQueue "Attributes"); the policies are JSON documents there.
_QUEUE_ATTRIBUTES = (
    "ContentBasedDeduplication", "DeduplicationScope", "DelaySeconds", "FifoQueue", "FifoThroughputLimit",
    "KmsDataKeyReusePeriodSeconds", "KmsMasterKeyId", "MaximumMessageSize", "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds", "SqsManagedSseEnabled", "VisibilityTimeout",
)
_QUEUE_POLICIES = ("RedrivePolicy", "RedriveAllowPolicy")


def _attribute(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _create_queue(client: Callable[[str], Any], name: str, props: dict[str, Any]) -> str:
    """SQS: the queue with its attributes; returns the queue URL (what ``Ref`` gives)."""
    sqs = client("sqs")
    attributes = {key: _attribute(props[key]) for key in _QUEUE_ATTRIBUTES if key in props}
    attributes.update({key: json.dumps(props[key]) for key in _QUEUE_POLICIES if key in props})
    return str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])


def _create_event_bus(client: Callable[[str], Any], name: str, props: dict[str, Any]) -> str:
    events = client("events")
    with contextlib.suppress(events.exceptions.ResourceAlreadyExistsException):
        events.create_event_bus(Name=name)
    return name


_CREATORS: dict[str, Callable[[Callable[[str], Any], str, dict[str, Any]], str]] = {
    BUCKET: _create_bucket,
    TABLE: _create_table,
    QUEUE: _create_queue,
    EVENT_BUS: _create_event_bus,
}


# -- functions ---------------------------------------------------------------------


@dataclass(frozen=True)
class FunctionSpec:
    """A function as the in-process transport loads it (gateway.functions.InProcessTransport)."""

    name: str
    #: Absolute: the template's ``CodeUri`` taken relative to the template's directory.
    code_uri: Path
    handler: str
    environment: Mapping[str, str] = field(default_factory=dict)


def _environment_string(value: Any) -> str:
    """Lambda environment values are strings; CloudFormation writes booleans in lower case."""
    if isinstance(value, bool):
        return str(value).lower()
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, list | dict) else str(value)


def _variables(properties: Mapping[str, Any]) -> dict[str, Any]:
    return dict((properties.get("Environment") or {}).get("Variables") or {})


def function_specs(template: Template, resolver: Resolver | None = None) -> dict[str, FunctionSpec]:
    """``{logical_id: FunctionSpec}`` for every AWS::Serverless::Function.

    SAM ``Globals.Function`` are merged under each function's own Properties; for
    ``Environment.Variables`` the two maps merge, the function's entries winning.
    """
    resolver = _default_resolver(template, resolver)
    defaults = dict((template.get("Globals") or {}).get("Function") or {})
    specs: dict[str, FunctionSpec] = {}
    for rid, resource in template.resources.items():
        if resource.get("Type") != SERVERLESS_FUNCTION:
            continue
        own = resource.get("Properties") or {}
        properties = {**defaults, **own}
        variables = resolver.resolve({**_variables(defaults), **_variables(own)})
        code_uri = resolver.resolve(properties.get("CodeUri"))
        handler = resolver.resolve(properties.get("Handler"))
        if not isinstance(code_uri, str) or not isinstance(handler, str):
            raise TemplateError(f"{rid}: a local function needs a CodeUri path and a Handler")
        specs[rid] = FunctionSpec(
            name=resolver.physical_name(rid),
            code_uri=(template.directory / code_uri).resolve(),
            handler=handler,
            environment={key: _environment_string(value) for key, value in variables.items()},
        )
    return specs


def shared_environment(specs: Iterable[FunctionSpec]) -> dict[str, str]:
    """The environment every function has with the same value (in practice: Globals)."""
    environments = [dict(spec.environment) for spec in specs]
    if not environments:
        return {}
    first, rest = environments[0], environments[1:]
    return {key: value for key, value in first.items() if all(env.get(key) == value for env in rest)}


def container_environment(template: Template, container: str, resolver: Resolver | None = None) -> dict[str, str]:
    """The ``Environment`` of a container of an AWS::ECS::TaskDefinition (``{}`` if none is named so)."""
    resolver = _default_resolver(template, resolver)
    for resource in template.resources.values():
        if resource.get("Type") != "AWS::ECS::TaskDefinition":
            continue
        for definition in (resource.get("Properties") or {}).get("ContainerDefinitions") or []:
            if definition.get("Name") == container:
                pairs = resolver.resolve(definition.get("Environment") or [])
                return {pair["Name"]: _environment_string(pair["Value"]) for pair in pairs}
    return {}
