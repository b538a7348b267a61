"""Providers' daily bills as plain rows: readers and writers of the WeChat Pay trade bill (交易账单,
gzip CSV, backtick-prefixed fields, summary section) and the Alipay business detail bill (业务明细,
a zip holding a GBK CSV with '#' comment lines). Pure functions: bytes in, rows out, no Django.

Amounts are integer fen, parsed from the bill's 元 text exactly (never through floats)."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import io
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

LOCAL_TZ = ZoneInfo("Asia/Shanghai")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

# The provider's word for a completed payment or refund; anything else is a status difference.
SUCCESS = "SUCCESS"


class BillError(Exception):
    """A bill we must not reconcile against: damaged, tampered with, or not adding up."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class BillRow:
    kind: Literal["payment", "refund"]
    out_trade_no: str
    out_refund_no: str
    provider_trade_no: str
    amount_fen: int
    status: str
    at: dt.datetime


_AMOUNT = re.compile(r"^(-?)(\d+)(?:\.(\d{1,2}))?$")


def fen_of(text: str) -> int:
    """"25.00" → 2500, "-0.5" → -50. BillError on anything else."""
    match = _AMOUNT.match(text.strip().replace(",", ""))
    if match is None:
        raise BillError(f"账单金额格式错误：{text!r}")
    sign, whole, part = match.groups()
    fen = int(whole) * 100 + int((part or "0").ljust(2, "0"))
    return -fen if sign else fen


def yuan_of(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return f"{sign}{fen // 100}.{fen % 100:02d}"


def sha1_of(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()  # noqa: S324 — the provider's own checksum, not a security hash


def verify_hash(data: bytes, *, hash_type: str, hash_value: str) -> None:
    """The download answer's hash over the downloaded bytes. BillError on a mismatch."""
    if hash_type.upper() != "SHA1":
        raise BillError(f"不支持的账单校验算法：{hash_type}")
    if sha1_of(data) != hash_value.strip().lower():
        raise BillError("账单文件校验失败：SHA1 与下载应答中的 hash_value 不一致，账单可能被篡改或下载不完整")


def _local_time(text: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(text.strip(), TIME_FORMAT).replace(tzinfo=LOCAL_TZ)
    except ValueError as exc:
        raise BillError(f"账单时间格式错误：{text!r}") from exc


# --- WeChat Pay trade bill ---------------------------------------------------------------------

WECHAT_HEADER = (
    "交易时间", "公众账号ID", "商户号", "特约商户号", "设备号", "微信订单号", "商户订单号", "用户标识",
    "交易类型", "交易状态", "付款银行", "货币种类", "应结订单金额", "代金券金额", "微信退款单号",
    "商户退款单号", "退款金额", "充值券退款金额", "退款类型", "退款状态", "商品名称", "商户数据包",
    "手续费", "费率", "订单金额", "申请退款金额", "费率备注",
)  # fmt: skip
WECHAT_SUMMARY_HEADER = (
    "总交易单数", "应结订单总金额", "退款总金额", "充值券退款总金额", "手续费总金额", "订单总金额", "申请退款总金额",
)  # fmt: skip


def _untick(value: str) -> str:
    return value[1:] if value.startswith("`") else value


def parse_wechat_bill(data: bytes) -> list[BillRow]:
    """Rows of a WeChat trade bill (gzip or plain CSV). BillError when the file is unreadable, a
    column is missing, or the summary's count and totals do not match the rows."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise BillError("微信账单解压失败") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BillError("微信账单不是 UTF-8 编码") from exc
    lines = [line for line in csv.reader(io.StringIO(text)) if line]
    if not lines or tuple(c.strip() for c in lines[0]) != WECHAT_HEADER:
        raise BillError("微信账单表头不符合交易账单格式")
    try:
        split = next(i for i, line in enumerate(lines) if line and line[0].strip() == WECHAT_SUMMARY_HEADER[0])
    except StopIteration as exc:
        raise BillError("微信账单缺少汇总行") from exc
    if split + 1 >= len(lines):
        raise BillError("微信账单缺少汇总数据")
    column = {name: i for i, name in enumerate(WECHAT_HEADER)}
    rows: list[BillRow] = []
    settled = refunded = 0
    for line in lines[1:split]:
        if len(line) != len(WECHAT_HEADER):
            raise BillError(f"微信账单第 {len(rows) + 2} 行列数不符")
        field = {name: _untick(line[i]).strip() for name, i in column.items()}
        settled += fen_of(field["应结订单金额"])
        refunded += fen_of(field["退款金额"])
        is_refund = field["交易状态"] == "REFUND" or bool(field["商户退款单号"])
        rows.append(
            BillRow(
                kind="refund" if is_refund else "payment",
                out_trade_no=field["商户订单号"],
                out_refund_no=field["商户退款单号"] if is_refund else "",
                provider_trade_no=field["微信订单号"],
                amount_fen=fen_of(field["退款金额"] if is_refund else field["应结订单金额"]),
                status=field["退款状态"] if is_refund else field["交易状态"],
                at=_local_time(field["交易时间"]),
            )
        )
    summary = dict(zip(WECHAT_SUMMARY_HEADER, (_untick(v).strip() for v in lines[split + 1]), strict=False))
    try:
        count = int(summary.get("总交易单数", ""))
    except ValueError as exc:
        raise BillError("微信账单汇总行的总交易单数不是数字") from exc
    if count != len(rows):
        raise BillError(f"微信账单汇总不符：汇总 {count} 笔，明细 {len(rows)} 笔")
    if fen_of(summary.get("应结订单总金额", "")) != settled:
        raise BillError("微信账单汇总不符：应结订单总金额与明细合计不一致")
    if fen_of(summary.get("退款总金额", "")) != refunded:
        raise BillError("微信账单汇总不符：退款总金额与明细合计不一致")
    return rows


def write_wechat_bill(
    rows: Iterable[BillRow], *, appid: str = "wx0000000000000000", mchid: str = "1900000000", gzipped: bool = True
) -> bytes:
    """A WeChat trade bill of `rows`, as the download URL serves it (gzip by default)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(WECHAT_HEADER)
    settled = refunded = count = 0
    for row in rows:
        refund = row.kind == "refund"
        order_fen = 0 if refund else row.amount_fen
        refund_fen = row.amount_fen if refund else 0
        settled += order_fen
        refunded += refund_fen
        count += 1
        values = [
            row.at.astimezone(LOCAL_TZ).strftime(TIME_FORMAT), appid, mchid, "0", "", row.provider_trade_no,
            row.out_trade_no, "", "JSAPI", "REFUND" if refund else row.status, "OTHERS", "CNY", yuan_of(order_fen),
            "0.00", f"RF{row.provider_trade_no}" if refund else "", row.out_refund_no, yuan_of(refund_fen), "0.00",
            "ORIGINAL" if refund else "", row.status if refund else "", "挂号费", "", "0.00", "0.60%",
            yuan_of(order_fen), yuan_of(refund_fen), "",
        ]  # fmt: skip
        writer.writerow(["`" + value for value in values])
    writer.writerow(WECHAT_SUMMARY_HEADER)
    writer.writerow(
        ["`" + v for v in (str(count), yuan_of(settled), yuan_of(refunded), "0.00", "0.00", yuan_of(settled), yuan_of(refunded))]
    )
    data = out.getvalue().encode("utf-8")
    return gzip.compress(data, mtime=0) if gzipped else data


# --- Alipay business detail bill ---------------------------------------------------------------

ALIPAY_HEADER = (
    "支付宝交易号", "商户订单号", "业务类型", "商品名称", "创建时间", "完成时间", "门店编号", "门店名称", "操作员",
    "终端号", "对方账户", "订单金额（元）", "商家实收（元）", "支付宝红包（元）", "集分宝（元）", "支付宝优惠（元）",
    "商家优惠（元）", "券核销金额（元）", "券名称", "商家红包消费金额（元）", "卡消费金额（元）", "退款批次号/请求号",
    "服务费（元）", "分润（元）", "备注",
)  # fmt: skip
_ALIPAY_TOTAL = re.compile(r"^#(交易|退款)合计：(\d+)笔")


def parse_alipay_bill(data: bytes) -> list[BillRow]:
    """Rows of an Alipay 业务明细 bill: the zip, or the GBK CSV itself. BillError when unreadable or
    when the '#…合计：N笔' lines disagree with the rows."""
    if data[:2] == b"PK":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                names = [n for n in archive.namelist() if n.endswith(".csv") and "汇总" not in n]
                if not names:
                    raise BillError("支付宝账单压缩包中没有业务明细文件")
                data = archive.read(names[0])
        except zipfile.BadZipFile as exc:
            raise BillError("支付宝账单压缩包损坏") from exc
    try:
        text = data.decode("gb18030")
    except UnicodeDecodeError as exc:
        raise BillError("支付宝账单不是 GBK 编码") from exc
    comments = [line.strip() for line in text.splitlines() if line.strip().startswith("#")]
    body = "\n".join(line for line in text.splitlines() if line.strip() and not line.strip().startswith("#"))
    lines = list(csv.reader(io.StringIO(body)))
    if not lines or tuple(c.strip() for c in lines[0]) != ALIPAY_HEADER:
        raise BillError("支付宝账单表头不符合业务明细格式")
    rows: list[BillRow] = []
    counts = {"交易": 0, "退款": 0}
    for number, line in enumerate(lines[1:], start=2):
        if len(line) != len(ALIPAY_HEADER):
            raise BillError(f"支付宝账单第 {number} 行列数不符")
        field = {name: line[i].strip() for i, name in enumerate(ALIPAY_HEADER)}
        business = field["业务类型"]
        if business not in counts:
            continue  # other business types (e.g. 转账) are not ours to reconcile
        counts[business] += 1
        refund = business == "退款"
        rows.append(
            BillRow(
                kind="refund" if refund else "payment",
                out_trade_no=field["商户订单号"],
                out_refund_no=field["退款批次号/请求号"] if refund else "",
                provider_trade_no=field["支付宝交易号"],
                amount_fen=abs(fen_of(field["订单金额（元）"])),
                status=SUCCESS,  # the detail bill lists finished business only
                at=_local_time(field["完成时间"] or field["创建时间"]),
            )
        )
    for comment in comments:
        match = _ALIPAY_TOTAL.match(comment)
        if match and int(match.group(2)) != counts[match.group(1)]:
            raise BillError(f"支付宝账单汇总不符：{match.group(1)}合计 {match.group(2)} 笔，明细 {counts[match.group(1)]} 笔")
    return rows


def write_alipay_bill(rows: Iterable[BillRow], *, day: dt.date, account: str = "20880000000000000156") -> bytes:
    """An Alipay bill of `rows` as its download URL serves it: a zip holding the GBK 业务明细 CSV."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    out.write("#支付宝业务明细查询\r\n")
    out.write(f"#账号：[{account}0156]\r\n")
    out.write(f"#起始日期：[{day:%Y年%m月%d日} 00:00:00]   终止日期：[{day + dt.timedelta(days=1):%Y年%m月%d日} 00:00:00]\r\n")
    out.write("#-----------------------------------------业务明细列表----------------------------------------\r\n")
    writer.writerow(ALIPAY_HEADER)
    totals = {"交易": [0, 0], "退款": [0, 0]}
    for row in rows:
        refund = row.kind == "refund"
        signed = -row.amount_fen if refund else row.amount_fen
        business = "退款" if refund else "交易"
        totals[business][0] += 1
        totals[business][1] += signed
        at = row.at.astimezone(LOCAL_TZ).strftime(TIME_FORMAT)
        values = [
            row.provider_trade_no + "\t", row.out_trade_no + "\t", business, "挂号费", at, at, "", "", "", "", "",
            yuan_of(signed), yuan_of(signed), "0.00", "0.00", "0.00", "0.00", "0.00", "", "0.00", "0.00",
            row.out_refund_no + "\t" if refund else "", "0.00", "0.00", "",
        ]  # fmt: skip
        writer.writerow(values)
    out.write("#-----------------------------------------业务明细列表结束------------------------------------\r\n")
    for business, (count, fen) in totals.items():
        out.write(f"#{business}合计：{count}笔，商家实收共{yuan_of(fen)}元\r\n")
    out.write(f"#导出时间：[{day + dt.timedelta(days=1):%Y年%m月%d日} 09:00:00]\r\n")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{account}_{day:%Y%m%d}_业务明细.csv", out.getvalue().encode("gbk"))
    return buffer.getvalue()
