"""The demo hospital: a realistic general hospital with two weeks of schedules, loaded by
`guahao demo`. Idempotent: rows are found by their codes, sessions by doctor (or doctorless
department clinic), date and period, so a second run adds only the days that are new since."""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import dataclass

from django.db import transaction

from guahao import clock
from guahao.catalog.models import Campus, Department, Doctor, Hospital, Notice
from guahao.catalog.visitors import visitor_rule_defaults
from guahao.scheduling import services as scheduling
from guahao.scheduling.models import RegistrationType, ReleaseRule, Session

DEMO_CODE = "DEMO"
SCHEDULE_DAYS = 14

HOSPITAL = {
    "name": "示范市第一人民医院",
    "short_name": "示范一院",
    "grade": "三级甲等",
    "address": "示范市西湖区解放路 88 号",
    "service_phone": "0571-8700 0000",
    "browse_level": 2,
    "schedule_days": SCHEDULE_DAYS,
}

# (code, name, parent code, location, intro)
DEPARTMENTS: list[tuple[str, str, str | None, str, str]] = [
    ("NK", "内科", None, "门诊楼 2–3 楼", "涵盖心血管、消化、呼吸、神经、内分泌、肾脏等内科专业。"),
    ("XXG", "心血管内科", "NK", "门诊楼 3 楼 A 区", "冠心病、高血压、心律失常、心力衰竭的诊治与介入治疗。"),
    ("GXY", "高血压专病门诊", "XXG", "门诊楼 3 楼 A 区 8 诊室", "难治性高血压、继发性高血压筛查与长期随访。"),
    ("XHN", "消化内科", "NK", "门诊楼 3 楼 B 区", "胃肠、肝胆胰疾病诊治，消化内镜诊疗中心。"),
    ("HXN", "呼吸内科", "NK", "门诊楼 2 楼 A 区", "慢阻肺、哮喘、肺部感染、肺结节的诊治。"),
    ("SJN", "神经内科", "NK", "门诊楼 2 楼 B 区", "脑血管病、癫痫、帕金森病、头痛头晕的诊治。"),
    ("NFM", "内分泌科", "NK", "门诊楼 2 楼 C 区", "糖尿病、甲状腺疾病、骨质疏松等内分泌代谢病。"),
    ("SNK", "肾内科", "NK", "门诊楼 2 楼 D 区", "慢性肾脏病、肾炎、血液透析与腹膜透析随访。"),
    ("WK", "外科", None, "门诊楼 4 楼", "普外、骨科、泌尿外科、神经外科等外科专业。"),
    ("PWK", "普外科", "WK", "门诊楼 4 楼 A 区", "甲状腺、乳腺、胃肠、肝胆、疝等普通外科疾病。"),
    ("GK", "骨科", "WK", "门诊楼 4 楼 B 区", "关节、脊柱、创伤与运动医学。"),
    ("MNWK", "泌尿外科", "WK", "门诊楼 4 楼 C 区", "泌尿系结石、前列腺疾病、泌尿系肿瘤。"),
    ("SJWK", "神经外科", "WK", "门诊楼 4 楼 D 区", "颅脑肿瘤、脑出血、颅脑外伤、脊髓疾病。"),
    ("FCK", "妇产科", None, "门诊楼 5 楼", "妇科与产科门诊。"),
    ("FK", "妇科", "FCK", "门诊楼 5 楼 A 区", "妇科炎症、妇科肿瘤、宫颈疾病筛查。"),
    ("CK", "产科", "FCK", "门诊楼 5 楼 B 区", "孕期建档、产前检查、高危妊娠管理。"),
    ("EK", "儿科", None, "儿科楼 1–2 楼", "儿童内科与新生儿专科。"),
    ("ENK", "儿内科", "EK", "儿科楼 1 楼", "小儿呼吸、消化、发热等常见病，设夜间门诊。"),
    ("XSEK", "新生儿科", "EK", "儿科楼 2 楼", "新生儿黄疸、早产儿随访、新生儿常见病。"),
    ("PFK", "皮肤科", None, "门诊楼 6 楼 A 区", "湿疹、痤疮、银屑病、皮肤过敏等皮肤病。"),
    ("YK", "眼科", None, "门诊楼 6 楼 B 区", "白内障、青光眼、屈光不正、儿童弱视。"),
    ("KQK", "口腔科", None, "门诊楼 6 楼 C 区", "牙体牙髓、牙周、口腔修复与种植。"),
    ("EBH", "耳鼻咽喉科", None, "门诊楼 6 楼 D 区", "鼻炎鼻窦炎、咽喉疾病、听力与睡眠呼吸暂停。"),
    ("ZYK", "中医科", None, "门诊楼 1 楼 东区", "中医内科调理、针灸推拿。"),
]

C, A, T, R = Doctor.Title.CHIEF, Doctor.Title.ASSOCIATE_CHIEF, Doctor.Title.ATTENDING, Doctor.Title.RESIDENT

# (code, name, department code, title, specialty); the intro is made from these.
DOCTORS: list[tuple[str, str, str, str, str]] = [
    ("D001", "陈建国", "XXG", C, "冠心病、心力衰竭的诊治及冠脉介入治疗"),
    ("D002", "林晓燕", "XXG", A, "心律失常、高血压、心脏起搏器随访"),
    ("D003", "周志强", "XXG", T, "胸闷胸痛、血脂异常、心血管病预防"),
    ("D004", "吴海涛", "GXY", A, "难治性高血压、继发性高血压筛查"),
    ("D005", "黄立新", "XHN", C, "消化道早癌内镜诊治、炎症性肠病"),
    ("D006", "刘佳", "XHN", T, "胃食管反流病、幽门螺杆菌感染、功能性消化不良"),
    ("D007", "张卫东", "HXN", C, "慢阻肺、支气管哮喘、肺结节诊治"),
    ("D008", "赵敏", "HXN", T, "慢性咳嗽、肺部感染、睡眠呼吸障碍"),
    ("D009", "王丽华", "SJN", C, "脑血管病、癫痫、认知障碍"),
    ("D010", "孙浩", "SJN", A, "帕金森病、头痛、眩晕"),
    ("D011", "李雪梅", "NFM", A, "糖尿病及其并发症、甲状腺疾病"),
    ("D012", "郑凯", "NFM", R, "糖尿病教育、血糖管理"),
    ("D013", "何振宇", "SNK", C, "慢性肾脏病、肾小球肾炎、血液透析"),
    ("D014", "马俊杰", "PWK", C, "甲状腺、乳腺肿瘤的外科治疗"),
    ("D015", "朱明", "PWK", T, "腹股沟疝、胆囊结石、体表肿物"),
    ("D016", "胡国栋", "GK", C, "膝髋关节置换、运动损伤与关节镜"),
    ("D017", "郭宁", "GK", A, "颈腰椎退行性疾病、脊柱微创"),
    ("D018", "罗文斌", "MNWK", A, "泌尿系结石、前列腺增生"),
    ("D019", "梁宏伟", "SJWK", C, "颅脑肿瘤、脑出血、颅脑外伤"),
    ("D020", "宋雅琴", "FK", C, "妇科肿瘤、宫颈疾病、腔镜手术"),
    ("D021", "谢婷", "FK", T, "妇科炎症、月经不调、宫颈癌筛查"),
    ("D022", "韩静", "CK", A, "高危妊娠、妊娠期糖尿病与高血压"),
    ("D023", "唐欣", "CK", T, "孕期建档、产前检查、孕期营养"),
    ("D024", "冯丽娟", "ENK", C, "小儿呼吸系统疾病、儿童哮喘"),
    ("D025", "许晨", "ENK", T, "小儿消化系统疾病、儿童生长发育"),
    ("D026", "邓晓红", "XSEK", A, "新生儿黄疸、早产儿随访"),
    ("D027", "曹雪", "PFK", A, "湿疹、痤疮、银屑病、荨麻疹"),
    ("D028", "彭飞", "PFK", R, "皮肤常见病、皮肤过敏"),
    ("D029", "曾志华", "YK", C, "白内障、青光眼手术"),
    ("D030", "萧琳", "YK", T, "屈光不正、儿童弱视与斜视"),
    ("D031", "田博", "KQK", A, "牙体牙髓病、种植修复"),
    ("D032", "董雯", "KQK", T, "牙周病、儿童口腔"),
    ("D033", "袁军", "EBH", C, "慢性鼻窦炎、鼻内镜手术、睡眠呼吸暂停"),
    ("D034", "蒋文清", "ZYK", C, "中医内科、脾胃病与失眠调理"),
    ("D035", "沈悦", "ZYK", T, "针灸推拿、颈肩腰腿痛"),
]

# Doctors who also hold one 特需号 evening clinic a week: code → fee in fen.
SPECIAL_CLINICS = {"D001": 30000, "D016": 20000, "D020": 20000, "D029": 10000}

# Department clinics (普通门诊, no named doctor) on weekday mornings and afternoons.
DEPARTMENT_CLINICS = ["XXG", "XHN", "HXN", "ENK", "PFK", "YK", "KQK", "EBH", "PWK", "GK", "FK"]
# Evening clinics (夜间门诊) by department: weekdays (0 = Monday) they run.
EVENING_CLINICS = {"ENK": range(7), "HXN": (0, 2, 4)}

SUSPEND_REASONS = ("医生外出参加学术会议", "医生临时手术安排", "医生外出义诊")

REGISTRATION_TYPES = [("PT", "普通号", 1000), ("ZJ", "专家号", 2500), ("TX", "特需号", 10000)]

REGISTRATION_NOTICE = """\
一、实名就诊：本院实行实名制预约挂号。请使用就诊人本人的有效身份证件预约，就诊时出示本人身份证件或医保卡；证件信息与预约信息不一致的，不予就诊。
二、放号时间：每日 07:00 开放第 7 天的号源（产科 08:00 开放 14 天内号源）。号源锁定后请在 10 分钟内完成支付，超时自动释放。
三、按时取号：请于预约时段开始前 30 分钟到门诊楼一楼自助机或挂号窗口取号签到；过号后须重新排队，由医生视情况安排就诊。
四、爽约规则：预约成功后既未按时取号、也未在规定时间内退号的，视为爽约。自然年内累计爽约 3 次，将暂停该就诊人线上预约资格 90 天。
五、退号规则：如需退号，请于就诊时段开始前 2 小时在线办理，挂号费原路退回；超过时限不能线上退号，请到挂号窗口办理。医生停诊时，系统自动退号退费并短信通知。
六、每个账号同时锁定的号源不超过 2 个，请勿重复锁号。
七、如有疑问，请致电医院客服 0571-8700 0000（工作日 8:00–17:30）。"""

EPIDEMIC_NOTICE = """\
一、进入门诊区域请全程规范佩戴口罩，配合工作人员进行体温检测。
二、如有发热（体温≥37.3℃）、咳嗽、咽痛等呼吸道症状，请先到发热门诊就诊（门诊楼东侧独立通道，24 小时开放）。
三、近 14 天内有传染病流行地区旅居史或确诊病例接触史的，请就诊时主动告知医务人员。
四、候诊时请保持 1 米以上间距；每位患者限 1 名陪护人员（儿童、行动不便者除外）。
五、请配合医院根据疫情形势采取的其他防控措施，感谢您的理解与支持。"""

MORNING = (Session.Period.MORNING, dt.time(8, 0), dt.time(11, 30))
AFTERNOON = (Session.Period.AFTERNOON, dt.time(13, 30), dt.time(17, 0))
EVENING = (Session.Period.EVENING, dt.time(18, 0), dt.time(21, 0))

# Released numbers per session and fee (fen) by title: fewer numbers for senior doctors.
BY_TITLE = {C: (16, "ZJ", 5000), A: (20, "ZJ", 2500), T: (28, "PT", 1000), R: (28, "PT", 1000)}
HALF_DAYS_PER_WEEK = {C: 2, A: 3, T: 4, R: 4}


@dataclass
class DemoResult:
    hospital: Hospital
    sessions_created: int


def _stable(*parts: object) -> int:
    """A number that is the same on every run and machine (unlike hash())."""
    return zlib.crc32("|".join(str(p) for p in parts).encode())


def _weekly_plan(index: int, title: str) -> set[tuple[int, tuple]]:
    """(weekday, period) pairs a doctor sees patients, spread over the week by their index."""
    plan: set[tuple[int, tuple]] = set()
    for k in range(HALF_DAYS_PER_WEEK[title]):
        plan.add(((index + 2 * k) % 5, MORNING if (index + k) % 2 == 0 else AFTERNOON))
    if index % 4 == 0:
        plan.add((5, MORNING))  # Saturday morning clinic
    return plan


def _load_hospital() -> tuple[Hospital, dict[str, Department], dict[str, Doctor], dict[str, RegistrationType]]:
    hospital, _ = Hospital.objects.get_or_create(code=DEMO_CODE, defaults=HOSPITAL)
    campus, _ = Campus.objects.get_or_create(
        hospital=hospital, name="总院区", defaults={"address": HOSPITAL["address"]}
    )
    departments: dict[str, Department] = {}
    for order, (code, name, parent, location, intro) in enumerate(DEPARTMENTS, start=1):
        parent_dept = departments[parent] if parent else None
        departments[code], _ = Department.objects.get_or_create(
            hospital=hospital,
            code=code,
            defaults={
                "campus": campus,
                "parent": parent_dept,
                "level": parent_dept.level + 1 if parent_dept else 1,
                "name": name,
                "intro": intro,
                "location": location,
                "sort_order": order,
                **visitor_rule_defaults(name),
            },
        )
    doctors: dict[str, Doctor] = {}
    for order, (code, name, dept, title, specialty) in enumerate(DOCTORS, start=1):
        label = Doctor.Title(title).label
        doctors[code], _ = Doctor.objects.get_or_create(
            hospital=hospital,
            code=code,
            defaults={
                "department": departments[dept],
                "name": name,
                "title": title,
                "specialty": specialty,
                "intro": f"{label}，从事{departments[dept].name}临床工作多年，擅长{specialty}。",
                "sort_order": order,
            },
        )
    types: dict[str, RegistrationType] = {}
    for code, name, fee in REGISTRATION_TYPES:
        types[code], _ = RegistrationType.objects.get_or_create(
            hospital=hospital, code=code, defaults={"name": name, "default_fee_fen": fee}
        )
    ReleaseRule.objects.get_or_create(
        hospital=hospital,
        department=None,
        defaults={"release_time": dt.time(7, 0), "window_days": 7, "lock_minutes": 10, "cancel_deadline_hours": 2},
    )
    # 产科 books prenatal checks two weeks ahead: a department rule overriding the hospital default.
    ReleaseRule.objects.get_or_create(
        hospital=hospital,
        department=departments["CK"],
        defaults={"release_time": dt.time(8, 0), "window_days": 14, "lock_minutes": 10, "cancel_deadline_hours": 2},
    )
    Notice.objects.get_or_create(
        hospital=hospital,
        kind=Notice.Kind.REGISTRATION,
        version=1,
        defaults={"title": "挂号须知", "body": REGISTRATION_NOTICE},
    )
    Notice.objects.get_or_create(
        hospital=hospital,
        kind=Notice.Kind.EPIDEMIC,
        version=1,
        defaults={"title": "防疫须知", "body": EPIDEMIC_NOTICE},
    )
    return hospital, departments, doctors, types


@dataclass(frozen=True)
class _Planned:
    department: Department
    doctor: Doctor | None
    registration_type: RegistrationType
    fee_fen: int
    capacity: int
    window_minutes: int
    period: tuple


def _plan_day(
    day: dt.date,
    departments: dict[str, Department],
    doctors: dict[str, Doctor],
    types: dict[str, RegistrationType],
) -> list[_Planned]:
    weekday = day.weekday()
    planned: list[_Planned] = []
    for index, (code, _, dept, title, _) in enumerate(DOCTORS):
        doctor = doctors[code]
        capacity, type_code, fee = BY_TITLE[title]
        for wd, period in sorted(_weekly_plan(index, title), key=lambda p: (p[0], p[1][1])):
            if wd == weekday:
                planned.append(_Planned(departments[dept], doctor, types[type_code], fee, capacity, 15, period))
        if code in SPECIAL_CLINICS and weekday == index % 5:
            planned.append(_Planned(departments[dept], doctor, types["TX"], SPECIAL_CLINICS[code], 6, 30, EVENING))
    for dept in DEPARTMENT_CLINICS:
        if weekday < 5:
            for period in (MORNING, AFTERNOON):
                planned.append(_Planned(departments[dept], None, types["PT"], 1000, 40, 15, period))
    for dept, weekdays in EVENING_CLINICS.items():
        if weekday in weekdays:
            planned.append(_Planned(departments[dept], None, types["PT"], 1000, 24, 15, EVENING))
    return planned


def _exists(item: _Planned, day: dt.date) -> bool:
    same = Session.objects.filter(date=day, period=item.period[0])
    if item.doctor is not None:
        return same.filter(doctor=item.doctor).exists()
    return same.filter(department=item.department, doctor=None).exists()


def _make_it_look_used(session: Session, *, offset: int, now: dt.datetime) -> None:
    """Give a new session the history a real calendar has: popular experts full in the first days,
    a few 停诊, and numbers already taken at the window, more of them for nearer days."""
    roll = _stable(session.department.code, session.doctor.code if session.doctor else "-", session.date, session.period)
    famous = session.doctor is not None and session.doctor.code == "D001"
    away = session.doctor is not None and session.doctor.code == "D010" and 2 <= offset <= 6
    if away or roll % 37 == 0:
        scheduling.suspend_session(session=session, reason=SUSPEND_REASONS[roll % len(SUSPEND_REASONS)])
    elif offset <= 6 and (famous or roll % 7 == 0):
        scheduling.take_slots_offline(session=session, count=session.capacity, now=now)
    elif offset <= 6:
        share = (7 - offset) / 10  # up to 70 % taken today, 10 % a week out
        scheduling.take_slots_offline(session=session, count=int(session.capacity * share * (roll % 100) / 100), now=now)


@transaction.atomic
def load_demo(*, today: dt.date | None = None) -> DemoResult:
    """Load (or top up) the demo hospital with sessions from `today` for SCHEDULE_DAYS days."""
    today = today or clock.today()
    now = clock.now()
    hospital, departments, doctors, types = _load_hospital()
    created = 0
    for offset in range(SCHEDULE_DAYS):
        day = today + dt.timedelta(days=offset)
        for item in _plan_day(day, departments, doctors, types):
            if _exists(item, day):
                continue
            period, start, end = item.period
            session = scheduling.create_session(
                department=item.department,
                doctor=item.doctor,
                registration_type=item.registration_type,
                date=day,
                period=period,
                start=start,
                end=end,
                fee_fen=item.fee_fen,
                capacity=item.capacity,
                window_minutes=item.window_minutes,
            )
            _make_it_look_used(session, offset=offset, now=now)
            created += 1
    return DemoResult(hospital=hospital, sessions_created=created)
