"""A small evaluator of CloudFormation intrinsic functions, for the local stack.

It knows what a local stack needs: ``Ref`` (resources, parameters, pseudo parameters),
``Fn::GetAtt`` (ARNs and names of local resources), ``Fn::Sub``, ``Fn::If`` with the
template's ``Conditions``, and the list and string functions. Anything that has no
local meaning (``Fn::ImportValue``: there are no other stacks) is a :class:`TemplateError`.

Reference: CloudFormation User Guide, "Intrinsic function reference" and "Pseudo
parameters reference"; what ``Ref`` and ``Fn::GetAtt`` return per resource type is on
each type's page ("Return values").
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

ACCOUNT_ID = "123456789012"  # moto's default account
REGION = "us-east-1"
PARTITION = "aws"
STACK_NAME = "local"


class TemplateError(Exception):
    """The template asks for something the local stack cannot give."""


class _NoValue:
    """``Ref: AWS::NoValue``: the enclosing property or list item is removed."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE = _NoValue()

#: ``Fn::GetAtt X.Arn`` per resource type, formatted with partition, region, account, name.
_ARNS = {
    "AWS::S3::Bucket": "arn:{partition}:s3:::{name}",
    "AWS::DynamoDB::Table": "arn:{partition}:dynamodb:{region}:{account}:table/{name}",
    "AWS::SQS::Queue": "arn:{partition}:sqs:{region}:{account}:{name}",
    "AWS::Events::EventBus": "arn:{partition}:events:{region}:{account}:event-bus/{name}",
    "AWS::Serverless::Function": "arn:{partition}:lambda:{region}:{account}:function:{name}",
    "AWS::Lambda::Function": "arn:{partition}:lambda:{region}:{account}:function:{name}",
    "AWS::Serverless::LayerVersion": "arn:{partition}:lambda:{region}:{account}:layer:{name}:1",
    "AWS::Lambda::LayerVersion": "arn:{partition}:lambda:{region}:{account}:layer:{name}:1",
    "AWS::IAM::Role": "arn:{partition}:iam::{account}:role/{name}",
    "AWS::Logs::LogGroup": "arn:{partition}:logs:{region}:{account}:log-group:{name}:*",
}
#: Types whose ``Ref`` is their ARN rather than their name.
_REF_IS_ARN = {"AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion"}
_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


def is_intrinsic(value: Any) -> bool:
    if not isinstance(value, dict) or len(value) != 1:
        return False
    key, arg = next(iter(value.items()))
    return key == "Ref" or key.startswith("Fn::") or (key == "Condition" and isinstance(arg, str))


def _sub_parts(arg: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(arg, str):
        return arg, {}
    text, variables = arg
    return text, dict(variables)


def references(value: Any) -> set[str]:
    """Names that ``value`` refers to with Ref, GetAtt or Sub (pseudo parameters excluded)."""
    found: set[str] = set()
    if isinstance(value, list):
        for item in value:
            found |= references(item)
    elif isinstance(value, dict):
        if "Ref" in value and isinstance(value["Ref"], str):
            found.add(value["Ref"])
        if "Fn::GetAtt" in value:
            target = value["Fn::GetAtt"]
            found.add(target.split(".", 1)[0] if isinstance(target, str) else target[0])
        if "Fn::Sub" in value:
            text, variables = _sub_parts(value["Fn::Sub"])
            for name in _SUB_VARIABLE.findall(text):
                if not name.startswith("!") and name not in variables:
                    found.add(name.split(".", 1)[0])
        for item in value.values():
            found |= references(item)
    return {name for name in found if not name.startswith("AWS::")}


def physical_name(logical_id: str, resource_type: str) -> str:
    """The local name of a resource: its logical ID (lower case for S3, whose names must be)."""
    return logical_id.lower() if resource_type == "AWS::S3::Bucket" else logical_id


@dataclass
class Resolver:
    """Evaluates intrinsic functions against one template, for a local stack.

    ``parameters`` override the template's parameter defaults; ``physical`` holds what
    ``Ref`` returns for resources already created (for a queue, the URL moto gave it);
    ``endpoint`` is the emulated AWS, used for queue URLs before the queues exist.
    """

    template: Mapping[str, Any]
    parameters: Mapping[str, Any] = field(default_factory=dict)
    region: str = REGION
    account_id: str = ACCOUNT_ID
    stack_name: str = STACK_NAME
    partition: str = PARTITION
    endpoint: str = ""
    physical: dict[str, str] = field(default_factory=dict)

    # -- names -----------------------------------------------------------------

    def _resource(self, logical_id: str) -> dict[str, Any]:
        resource = (self.template.get("Resources") or {}).get(logical_id)
        if resource is None:
            raise TemplateError(f"no resource {logical_id}")
        return dict(resource)

    def physical_name(self, logical_id: str) -> str:
        return physical_name(logical_id, self._resource(logical_id)["Type"])

    def arn(self, logical_id: str) -> str:
        kind = self._resource(logical_id)["Type"]
        if kind not in _ARNS:
            raise TemplateError(f"{logical_id}: no local ARN for {kind}")
        return _ARNS[kind].format(
            partition=self.partition, region=self.region, account=self.account_id, name=self.physical_name(logical_id)
        )

    def queue_url(self, logical_id: str) -> str:
        base = self.endpoint.rstrip("/") or f"https://sqs.{self.region}.amazonaws.com"
        return f"{base}/{self.account_id}/{self.physical_name(logical_id)}"

    def _pseudo(self, name: str) -> Any:
        pseudo = {
            "AWS::AccountId": self.account_id,
            "AWS::Region": self.region,
            "AWS::StackName": self.stack_name,
            "AWS::Partition": self.partition,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackId": f"arn:{self.partition}:cloudformation:{self.region}:{self.account_id}:stack/"
            f"{self.stack_name}/00000000-0000-0000-0000-000000000000",
            "AWS::NotificationARNs": [],
            "AWS::NoValue": NO_VALUE,
        }
        if name not in pseudo:
            raise TemplateError(f"unknown pseudo parameter {name}")
        return pseudo[name]

    def _parameter(self, name: str, declaration: Mapping[str, Any]) -> Any:
        if name in self.parameters:
            value = self.parameters[name]
        elif "Default" in declaration:
            value = declaration["Default"]
        else:
            raise TemplateError(f"parameter {name} has no Default: give it a value")
        kind = str(declaration.get("Type", "String"))
        if isinstance(value, str) and (kind.startswith("List<") or kind == "CommaDelimitedList"):
            return value.split(",") if value else []
        return value

    def ref(self, name: str) -> Any:
        if name.startswith("AWS::"):
            return self._pseudo(name)
        declared = (self.template.get("Parameters") or {}).get(name)
        if declared is not None:
            return self._parameter(name, declared)
        if name in self.physical:
            return self.physical[name]
        kind = self._resource(name)["Type"]
        if kind == "AWS::SQS::Queue":
            return self.queue_url(name)  # Ref of a queue is its URL
        return self.arn(name) if kind in _REF_IS_ARN else self.physical_name(name)

    def get_att(self, logical_id: str, attribute: str) -> Any:
        kind = self._resource(logical_id)["Type"]
        if attribute == "Arn":
            return self.arn(logical_id)
        if (kind, attribute) == ("AWS::SQS::Queue", "QueueUrl"):
            return self.ref(logical_id)
        if attribute in {"QueueName", "Name", "LogGroupName", "RoleId"} or (
            kind == "AWS::S3::Bucket" and attribute == "BucketName"
        ):
            return self.physical_name(logical_id)
        if kind == "AWS::DynamoDB::Table" and attribute == "StreamArn":
            return f"{self.arn(logical_id)}/stream/1970-01-01T00:00:00.000"
        raise TemplateError(f"{logical_id}: no local value for Fn::GetAtt {attribute}")

    # -- conditions ------------------------------------------------------------

    def condition(self, name: str) -> bool:
        conditions = self.template.get("Conditions") or {}
        if name not in conditions:
            raise TemplateError(f"no condition {name}")
        return bool(self.resolve(conditions[name]))

    # -- evaluation ------------------------------------------------------------

    def resolve(self, value: Any) -> Any:
        """``value`` with every intrinsic function evaluated and every ``AWS::NoValue`` removed."""
        if isinstance(value, list):
            items = [self.resolve(item) for item in value]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if is_intrinsic(value):
            key, arg = next(iter(value.items()))
            function = _FUNCTIONS.get(key)
            if function is None:
                raise TemplateError(f"unsupported intrinsic function {key}")
            return function(self, arg)
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not NO_VALUE}

    def _sub(self, arg: Any) -> str:
        text, variables = _sub_parts(arg)

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):  # "${!Literal}" is the text "${Literal}"
                return "${" + name[1:] + "}"
            if name in variables:
                value = self.resolve(variables[name])
            elif "." in name and not name.startswith("AWS::"):
                value = self.get_att(*name.split(".", 1))
            else:
                value = self.ref(name)
            return str(value)

        return _SUB_VARIABLE.sub(replace, text)

    def _if(self, arg: list[Any]) -> Any:
        name, when_true, when_false = arg
        return self.resolve(when_true if self.condition(name) else when_false)

    def _get_att(self, arg: Any) -> Any:
        logical_id, attribute = arg.split(".", 1) if isinstance(arg, str) else self.resolve(arg)
        return self.get_att(logical_id, attribute)

    def _cidr(self, arg: list[Any]) -> list[str]:
        block, count, bits = (self.resolve(a) for a in arg)
        network = ipaddress.ip_network(block)
        subnets = network.subnets(new_prefix=network.max_prefixlen - int(bits))
        return [str(subnet) for _, subnet in zip(range(int(count)), subnets, strict=False)]

    def _find_in_map(self, arg: list[Any]) -> Any:
        name, top, second = (self.resolve(a) for a in arg[:3])
        try:
            return self.template["Mappings"][name][top][second]
        except KeyError:
            raise TemplateError(f"Fn::FindInMap: no {name}/{top}/{second}") from None

    def _import_value(self, arg: Any) -> Any:
        raise TemplateError(f"Fn::ImportValue {arg!r}: there are no other stacks locally")

    def _resolved(self, arg: Any) -> list[Any]:
        return list(self.resolve(arg))


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _equals(r: Resolver, arg: list[Any]) -> bool:
    first, second = r._resolved(arg)
    return _text(first) == _text(second)


_FUNCTIONS: dict[str, Callable[[Resolver, Any], Any]] = {
    "Ref": lambda r, name: r.ref(name),
    "Condition": lambda r, name: r.condition(name),
    "Fn::GetAtt": Resolver._get_att,
    "Fn::Sub": Resolver._sub,
    "Fn::If": Resolver._if,
    "Fn::Equals": _equals,
    "Fn::Not": lambda r, arg: not r._resolved(arg)[0],
    "Fn::And": lambda r, arg: all(r._resolved(arg)),
    "Fn::Or": lambda r, arg: any(r._resolved(arg)),
    "Fn::Join": lambda r, arg: str(r.resolve(arg[0])).join(str(v) for v in r.resolve(arg[1])),
    "Fn::Split": lambda r, arg: str(r.resolve(arg[1])).split(str(r.resolve(arg[0]))),
    "Fn::Select": lambda r, arg: r.resolve(arg[1])[int(r.resolve(arg[0]))],
    "Fn::FindInMap": Resolver._find_in_map,
    "Fn::GetAZs": lambda r, arg: [f"{r.resolve(arg) or r.region}{zone}" for zone in "abc"],
    "Fn::Base64": lambda r, arg: base64.b64encode(str(r.resolve(arg)).encode()).decode(),
    "Fn::Cidr": Resolver._cidr,
    "Fn::ImportValue": Resolver._import_value,
    "Fn::Length": lambda r, arg: len(r.resolve(arg)),
    "Fn::ToJsonString": lambda r, arg: json.dumps(r.resolve(arg), separators=(",", ":")),
}
